//! The attacks of the security review, performed for real against the real `jobpack serve` on
//! 127.0.0.1: each test does what an attacker with a submitter token (or a job written by one)
//! would do, and checks that the server does not give in. See SECURITY.md for the threat model.
//! Tests that need the sandbox's cgroups, a tmpfs or namespaces run as root (CI) and say why they
//! skip elsewhere.

mod common;
#[path = "../../jobpack-core/tests/support/mod.rs"]
mod support;

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{FINAL, Launch, Server, call, is_root};
use serde_json::{Value, json};
use support::{DataServer, GitDaemon, Route, fixture_repo, host_procs_with};

const ADMIN: &str = "jp_security-test-admin-0123456789abcdef";

fn skip_unless_root(name: &str) -> bool {
    if !is_root() {
        println!("skipping {name}: needs root (sandbox cgroups, tmpfs mounts)");
        return true;
    }
    false
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

fn token_server(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let mut all = vec![("JOBPACK_ADMIN_TOKEN", ADMIN)];
    all.extend_from_slice(env);
    Server::launch(
        data,
        Launch {
            args: extra,
            env: &all,
            capture_stderr: false,
        },
    )
}

async fn post(s: &Server, token: Option<&str>, body: &Value) -> (u16, Value) {
    call(&client(), s, "POST", "/v1/jobs", token, Some(body)).await
}

/// Submits a job (201 expected) and returns its id.
async fn submit(s: &Server, token: Option<&str>, body: Value) -> String {
    let (st, v) = post(s, token, &body).await;
    assert_eq!(st, 201, "{v}");
    v["job_id"].as_str().unwrap().to_owned()
}

async fn job(s: &Server, token: Option<&str>, id: &str) -> Value {
    let (st, v) = call(&client(), s, "GET", &format!("/v1/jobs/{id}"), token, None).await;
    assert_eq!(st, 200, "{v}");
    v
}

/// Waits for job `id` to reach one of `want` (failing on any other final status).
async fn wait_for(s: &Server, token: Option<&str>, id: &str, want: &[&str], secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = job(s, token, id).await;
        let st = v["status"].as_str().unwrap_or("").to_owned();
        if want.contains(&st.as_str()) {
            return v;
        }
        assert!(
            !FINAL.contains(&st.as_str()),
            "job {id} ended as {st}, wanted {want:?}: {v}"
        );
        assert!(Instant::now() < deadline, "job {id} stuck in {st}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn add_user(s: &Server, name: &str, role: &str, quota: Value) -> String {
    let c = client();
    let body = json!({"name": name, "role": role, "quota": quota});
    let (st, v) = call(&c, s, "POST", "/v1/users", Some(ADMIN), Some(&body)).await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = call(
        &c,
        s,
        "POST",
        &format!("/v1/users/{name}/tokens"),
        Some(ADMIN),
        Some(&json!({"name": "t"})),
    )
    .await;
    assert!((200..300).contains(&st), "{v}");
    v["token"].as_str().unwrap().to_owned()
}

/// A multipart submission (with a bearer token if given): the status and the JSON answer.
async fn post_form(
    s: &Server,
    token: Option<&str>,
    form: reqwest::multipart::Form,
) -> (u16, Value) {
    let mut r = client().post(s.u("/v1/jobs"));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.multipart(form).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Fails unless the peak memory of `pid` grew by less than `bound` bytes since `before`.
fn assert_peak_growth(pid: u32, before: u64, bound: u64, what: &str) {
    let after = peak_rss(pid);
    println!("peak RSS of the server: {before} bytes before {what}, {after} after");
    assert!(
        after < before + bound,
        "{what} took the server's peak memory from {before} to {after} bytes"
    );
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// CPU seconds a process has used.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

// ---------------------------------------------------------------------------------------------
// Critical 1 and 2: a running job swaps a directory and a symlink to a host directory in a loop
// (renameat2 RENAME_EXCHANGE) while the attacker downloads through the swapped path.

const SWAPPER: &str = r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
end = time.time() + float(sys.argv[1])
open("ready", "w").close()
while time.time() < end:
    libc.renameat2(AT_FDCWD, b"a", AT_FDCWD, b"b", RENAME_EXCHANGE)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn files_and_tarball_never_follow_a_link_swapped_in_by_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    // A host file the job must never get: same name and size as the job's decoy.
    let host = tmp.path().join("host-secrets");
    std::fs::create_dir(&host).unwrap();
    let secret = format!("HOST-SECRET-{}\n", uuid::Uuid::new_v4());
    std::fs::write(host.join("shadow"), &secret).unwrap();
    let decoy = "d".repeat(secret.len() - 1) + "\n";
    let s = Server::start(&tmp.path().join("data"), &[]);
    let script = format!(
        "mkdir a && printf '{decoy}' > a/shadow && ln -s {} b && python3 swap.py 25",
        host.display()
    );
    let body = json!({"command": ["sh", "-c", format!("cat > swap.py <<'EOF'\n{SWAPPER}\nEOF\n{script}")],
                      "limits": {"timeout": 60}});
    let id = submit(&s, None, body).await;
    // Wait until the swapping has begun.
    let ready = format!("/v1/jobs/{id}/files/code/ready");
    let deadline = Instant::now() + Duration::from_secs(60);
    while client().get(s.u(&ready)).send().await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "the swapper never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (mut served, mut refused) = (0, 0);
    for i in 0..400 {
        let path = if i % 2 == 0 { "a" } else { "b" };
        let r = client()
            .get(s.u(&format!("/v1/jobs/{id}/files/code/{path}/shadow")))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert!(
            !text.contains("HOST-SECRET"),
            "a host file was served: {text}"
        );
        match status {
            200 => {
                assert_eq!(text, decoy);
                served += 1;
            }
            404 => refused += 1,
            other => panic!("unexpected {other}: {text}"),
        }
    }
    println!("during the swap: {served} decoys served, {refused} refused, no host byte");
    assert!(
        served > 0 && refused > 0,
        "served {served}, refused {refused}"
    );

    let mut links = 0;
    for _ in 0..40 {
        let r = client()
            .get(s.u(&format!("/v1/jobs/{id}/tarball")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let bytes = r.bytes().await.unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            if e.header().entry_type().is_symlink() {
                // A link is archived as the link it is.
                let target = e.link_name().unwrap().unwrap().display().to_string();
                assert_eq!(target, host.display().to_string());
                links += 1;
            }
            let mut content = String::new();
            e.read_to_string(&mut content).ok();
            assert!(
                !content.contains("HOST-SECRET"),
                "a host file came back in the tarball"
            );
        }
    }
    assert!(links > 0, "the swapped link never showed in a tarball");
    call(
        &client(),
        &s,
        "POST",
        &format!("/v1/jobs/{id}/cancel"),
        None,
        None,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// High 3: a tail of a 1.5 GB log.

#[tokio::test(flavor = "multi_thread")]
async fn a_tail_of_a_huge_log_reads_only_the_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let body = json!({
        "command": "head -c 1500000000 /dev/zero | tr '\\0' x; echo; echo THE-END",
        "limits": {"log_bytes": 2_000_000_000u64, "timeout": 300}});
    let id = submit(&s, None, body).await;
    wait_for(&s, None, &id, &["completed"], 300).await;
    let pid = s.child.id();
    let before = peak_rss(pid);
    let reads = (0..4).map(|_| {
        let u = s.u(&format!("/v1/jobs/{id}/logs?tail=100"));
        async move { client().get(u).send().await.unwrap().text().await.unwrap() }
    });
    for text in futures_util::future::join_all(reads).await {
        assert_eq!(text.len(), 100);
        assert!(text.ends_with("x\nTHE-END\n"), "{text:?}");
    }
    let at = client()
        .get(s.u(&format!("/v1/jobs/{id}/logs?offset=1499999990")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(at, "xxxxxxxxxx\nTHE-END\n");
    // The whole log, streamed: counted here, never held by the server.
    let mut r = client()
        .get(s.u(&format!("/v1/jobs/{id}/logs")))
        .send()
        .await
        .unwrap();
    let mut n = 0u64;
    while let Some(c) = r.chunk().await.unwrap() {
        n += c.len() as u64;
    }
    assert_eq!(n, 1_500_000_000 + 1 + 8);
    assert_peak_growth(
        pid,
        before,
        64 << 20,
        "four tails and a whole read of the log",
    );
}

// ---------------------------------------------------------------------------------------------
// High 4: a job that asks for no limits.

#[tokio::test(flavor = "multi_thread")]
async fn a_job_without_limits_is_stopped_by_the_defaults() {
    if skip_unless_root("a_job_without_limits_is_stopped_by_the_defaults") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The disk default is lowered so that filling it takes a second, not 8 GiB.
    let s = Server::start(
        &tmp.path().join("data"),
        &[
            "--default-limit",
            "disk_bytes=64M",
            "--default-limit",
            "timeout=40s",
        ],
    );
    let (_, h) = call(&client(), &s, "GET", "/v1/health", None, None).await;
    assert_eq!(h["limits"]["defaults"]["pids"], 512, "{h}");
    assert_eq!(h["limits"]["defaults"]["disk_bytes"], 64 << 20, "{h}");
    assert_eq!(h["limits"]["defaults"]["log_bytes"], 256 << 20, "{h}");

    let cases = [
        (
            "fork",
            "i=0; while [ $i -lt 10000 ]; do sleep 60 & i=$((i+1)); done 2>/dev/null; \
             echo started $i; sleep 60",
            "limits.pids",
        ),
        ("log", "yes", "limits.log_bytes"),
        (
            "sparse",
            "truncate -s 15T big && echo made",
            "limits.file_size_bytes",
        ),
        (
            "disk",
            "i=0; while [ $i -lt 100 ]; do head -c 4M /dev/urandom > f$i; i=$((i+1)); done; \
             sleep 30",
            "limits.disk_bytes",
        ),
    ];
    let mut ids = Vec::new();
    for (name, cmd, _) in cases {
        let (st, v) = call(
            &client(),
            &s,
            "POST",
            "/v1/jobs",
            None,
            Some(&json!({"name": name, "command": cmd})),
        )
        .await;
        assert_eq!(st, 201, "{v}");
        ids.push(v["job_id"].as_str().unwrap().to_owned());
    }
    for ((name, _, limit), id) in cases.iter().zip(&ids) {
        let v = wait_for(&s, None, id, FINAL, 120).await;
        let reason = v["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(limit), "{name}: {v}");
        if *name != "fork" {
            assert_eq!(v["status"], "limit_exceeded", "{name}: {v}");
        }
        assert_eq!(v["request"]["limits"]["pids"], 512, "{name}: {v}");
    }
}

// ---------------------------------------------------------------------------------------------
// High 4 (downloads): a huge sparse file; the client goes away; the server shuts down.

#[tokio::test(flavor = "multi_thread")]
async fn downloads_of_a_huge_sparse_file_are_bounded_and_stop_with_their_client() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &["--tarball-max-mb", "1024"]);
    let body = json!({"command": "truncate -s 3G big && truncate -s 900M mid && echo ok"});
    let id = submit(&s, None, body).await;
    wait_for(&s, None, &id, &["completed"], 90).await;
    // Over the tarball bound: refused before a byte is sent.
    let (st, v) = call(
        &client(),
        &s,
        "GET",
        &format!("/v1/jobs/{id}/tarball"),
        None,
        None,
    )
    .await;
    assert_eq!(st, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains("1073741824"), "{v}");

    // One file of 900 MB of zeros: the client reads 1 MB and goes away; the server stops.
    let pid = s.child.id();
    {
        let mut r = client()
            .get(s.u(&format!("/v1/jobs/{id}/files/code/mid")))
            .send()
            .await
            .unwrap();
        let mut got = 0;
        while got < 1 << 20 {
            got += r.chunk().await.unwrap().unwrap().len();
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c0 = cpu_secs(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_secs(pid) - c0;
    println!("server CPU in the 2 s after the client left: {used:.2} s");
    assert!(
        used < 0.3,
        "the server kept working for a client that left: {used} s"
    );

    // SIGTERM with a download in flight (a client that reads slowly) ends within the grace.
    let mut slow = client()
        .get(s.u(&format!("/v1/jobs/{id}/files/code/mid")))
        .send()
        .await
        .unwrap();
    slow.chunk().await.unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let t = Instant::now();
    let mut s = s;
    loop {
        if s.child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the server did not stop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(slow);
}

// ---------------------------------------------------------------------------------------------
// High 5: the data directory fills up.

struct Tmpfs(std::path::PathBuf);
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_answers_507_keeps_tokens_working_and_loses_no_state_change() {
    if skip_unless_root("a_full_disk_answers_507_keeps_tokens_working_and_loses_no_state_change") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(ok.success(), "mount tmpfs");
    let _guard = Tmpfs(mnt.clone());
    let data = mnt.join("data");
    let s = token_server(&data, &[], &[]);
    let user = add_user(&s, "dora", "submitter", json!({})).await;
    let fresh = add_user(&s, "fred", "submitter", json!({})).await;
    let running = submit(&s, Some(&user), json!({"command": "sleep 3; echo done"})).await;
    wait_for(&s, Some(&user), &running, &["running"], 60).await;

    // Fill the disk.
    let fill = data.join("fill");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&fill).unwrap();
        let chunk = vec![7u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    // An upload needs disk: 507 with a problem body.
    let form = reqwest::multipart::Form::new()
        .text("spec", json!({"command": "cat x"}).to_string())
        .part(
            "code_files",
            reqwest::multipart::Part::bytes(vec![1u8; 4 << 20]).file_name("x"),
        );
    let (status, v) = post_form(&s, Some(&user), form).await;
    assert_eq!(status, 507, "{v}");
    assert_eq!(v["code"], "insufficient_storage", "{v}");
    // A JSON submission is stored or refused with 507, never a 500.
    let (st, v) = post(&s, Some(&user), &json!({"command": "true"})).await;
    assert!(st == 201 || st == 507, "{st} {v}");
    // Valid tokens keep working, also one whose first use cannot be recorded.
    for t in [&user, &fresh, &user.to_string()] {
        for _ in 0..10 {
            let (st, v) = call(&client(), &s, "GET", "/v1/jobs", Some(t), None).await;
            assert_eq!(st, 200, "{v}");
        }
    }
    // Space comes back: the job that ended meanwhile is recorded, nothing is stuck.
    tokio::time::sleep(Duration::from_secs(4)).await;
    std::fs::remove_file(&fill).unwrap();
    let v = wait_for(&s, Some(&user), &running, &["completed"], 60).await;
    assert_eq!(v["exit_code"], 0, "{v}");
    let (st, v) = call(&client(), &s, "GET", "/v1/jobs", Some(ADMIN), None).await;
    assert_eq!(st, 200);
    for j in v["jobs"].as_array().unwrap() {
        let id = j["job_id"].as_str().unwrap();
        wait_for(&s, Some(ADMIN), id, FINAL, 60).await;
    }
    let again = submit(&s, Some(&user), json!({"command": "echo after"})).await;
    wait_for(&s, Some(&user), &again, &["completed"], 60).await;
    drop(s);
}

// ---------------------------------------------------------------------------------------------
// High 6: SSRF through data and git URLs.

#[tokio::test(flavor = "multi_thread")]
async fn the_server_refuses_to_fetch_from_internal_destinations() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataServer::start().await;
    let secret = data.route("/internal", Route::Bytes(Arc::new(b"internal".to_vec())));
    let port = data.addr.port();
    let repos = tmp.path().join("repos");
    let fx = fixture_repo(&repos, "app", true);
    let daemon = GitDaemon::start(&repos);
    // The server's default policy: the test helper's loopback allowance removed.
    let s = Server::launch(
        &tmp.path().join("data"),
        Launch {
            args: &["--auth", "none"],
            env: &[("JOBPACK_ALLOW_FETCH_FROM", "")],
            capture_stderr: false,
        },
    );
    for (body, field) in [
        (json!({"command": "x", "data_url": secret}), "data[0].url"),
        (
            json!({"command": "x", "data": [{"url": format!("http://localhost:{port}/internal")}]}),
            "data[0].url",
        ),
        (
            json!({"command": "x", "data_url": "http://169.254.169.254/latest/meta-data/"}),
            "data[0].url",
        ),
        (
            json!({"command": "x", "git_url": daemon.url("app.git"), "commit_hash": fx.commits[0]}),
            "git_url",
        ),
    ] {
        let (st, v) = call(&client(), &s, "POST", "/v1/jobs", None, Some(&body)).await;
        assert_eq!(st, 400, "{body}: {v}");
        assert_eq!(v["code"], "forbidden_destination", "{v}");
        assert!(v["message"].as_str().unwrap().starts_with(field), "{v}");
    }
    // Batches are checked the same way.
    let (st, v) = call(
        &client(),
        &s,
        "POST",
        "/v1/batches",
        None,
        Some(&json!({"jobs": [{"command": "x", "data_url": secret}]})),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(
        data.hits("/internal"),
        0,
        "the server fetched an internal URL"
    );
    drop(s);

    // Allowed by name only, a redirect to a literal loopback address fails the job.
    let redirect = data.route("/go", Route::Redirect(secret.clone()));
    let s = Server::launch(
        &tmp.path().join("data2"),
        Launch {
            args: &["--auth", "none", "--allow-fetch-from", "localhost"],
            env: &[("JOBPACK_ALLOW_FETCH_FROM", "")],
            capture_stderr: false,
        },
    );
    let body = json!({"command": "x", "data_url": redirect.replace("127.0.0.1", "localhost")});
    let id = submit(&s, None, body).await;
    let v = wait_for(&s, None, &id, FINAL, 60).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error_code"], "forbidden_destination", "{v}");
    assert_eq!(data.hits("/internal"), 0, "the redirect was followed");
}

// ---------------------------------------------------------------------------------------------
// High 7: the host network.

#[tokio::test(flavor = "multi_thread")]
async fn host_networking_is_a_grant() {
    let tmp = tempfile::tempdir().unwrap();
    let s = token_server(&tmp.path().join("data"), &[], &[]);
    let sub = add_user(&s, "sam", "submitter", json!({})).await;
    let body = json!({"command": "true", "network": "host", "run": false});
    let (st, v) = post(&s, Some(&sub), &body).await;
    assert_eq!(st, 403, "{v}");
    assert_eq!(v["code"], "network_forbidden");
    // Batches and workflows too.
    let (st, _) = call(
        &client(),
        &s,
        "POST",
        "/v1/batches",
        Some(&sub),
        Some(&json!({"jobs": [body.clone()]})),
    )
    .await;
    assert_eq!(st, 403);
    // An admin may; an admin may grant it.
    let (st, v) = post(&s, Some(ADMIN), &body).await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = call(
        &client(),
        &s,
        "PUT",
        "/v1/users/sam/quota",
        Some(ADMIN),
        Some(&json!({"allow_host_network": true})),
    )
    .await;
    assert!((200..300).contains(&st), "{v}");
    let (st, v) = post(&s, Some(&sub), &body).await;
    assert_eq!(st, 201, "{v}");
}

// ---------------------------------------------------------------------------------------------
// Medium 8 and 9: archive bombs and big uploads.

#[tokio::test(flavor = "multi_thread")]
async fn uploads_are_bounded_by_the_disk_quota_and_kept_once() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    // 64 MB of zeros in a zip of about 64 KB, for a job whose disk quota is 8 MB.
    let zip = {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let o = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        w.start_file("zeros.bin", o).unwrap();
        let z = vec![0u8; 1 << 20];
        for _ in 0..64 {
            std::io::Write::write_all(&mut w, &z).unwrap();
        }
        w.finish().unwrap().into_inner()
    };
    assert!(zip.len() < 1 << 20);
    let form = reqwest::multipart::Form::new()
        .text(
            "spec",
            json!({"command": "ls", "limits": {"disk_bytes": 8 << 20}}).to_string(),
        )
        .part(
            "archive",
            reqwest::multipart::Part::bytes(zip).file_name("bomb.zip"),
        );
    let (status, v) = post_form(&s, None, form).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("8388608"), "{v}");
    // Nothing of it stays on disk.
    let jobs: Vec<_> = std::fs::read_dir(tmp.path().join("data/jobs"))
        .unwrap()
        .collect();
    assert!(jobs.is_empty(), "{jobs:?}");

    // A normal upload: after the run, one copy (the artifact and the working directory, no
    // upload/ beside them).
    let form = reqwest::multipart::Form::new()
        .text("spec", json!({"command": "cat in.txt"}).to_string())
        .part(
            "code_files",
            reqwest::multipart::Part::bytes(b"uploaded\n".to_vec()).file_name("in.txt"),
        );
    let (status, v) = post_form(&s, None, form).await;
    assert_eq!(status, 201, "{v}");
    let id = v["job_id"].as_str().unwrap();
    wait_for(&s, None, id, &["completed"], 60).await;
    let dir = tmp.path().join("data/jobs").join(id);
    assert!(!dir.join("upload").exists());
    assert!(dir.join("work/code/in.txt").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn four_big_uploads_at_once_stay_out_of_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let pid = s.child.id();
    let before = peak_rss(pid);
    const SIZE: u64 = 200 << 20;
    let uploads = (0..4).map(|i| {
        let u = s.u("/v1/jobs");
        async move {
            let chunks = futures_util::stream::iter(
                (0..SIZE / (1 << 20)).map(|_| Ok::<_, std::io::Error>(vec![b'z'; 1 << 20])),
            );
            let part = reqwest::multipart::Part::stream_with_length(
                reqwest::Body::wrap_stream(chunks),
                SIZE,
            )
            .file_name(format!("big{i}.bin"));
            let form = reqwest::multipart::Form::new()
                .text("spec", json!({"command": "true", "run": false}).to_string())
                .part("input_files", part);
            let r = client().post(u).multipart(form).send().await.unwrap();
            let st = r.status().as_u16();
            (st, r.text().await.unwrap())
        }
    });
    for (st, text) in futures_util::future::join_all(uploads).await {
        assert_eq!(st, 201, "{text}");
    }
    assert_peak_growth(pid, before, 96 << 20, "four 200 MB uploads");
}

// ---------------------------------------------------------------------------------------------
// Medium 10: half-sent requests.

#[tokio::test(flavor = "multi_thread")]
async fn half_sent_requests_neither_starve_the_server_nor_stay_open() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &["--header-timeout", "2"]);
    let addr = s.url.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..1100 {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        std::io::Write::write_all(&mut c, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n").unwrap();
        held.push(c);
    }
    let t = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        client().get(s.u("/v1/health")).send(),
    )
    .await
    .expect("health answered while 1,100 requests hang")
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(t.elapsed() < Duration::from_secs(5));
    // After the header timeout the server has closed them.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut closed = 0;
    for c in &mut held {
        c.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut b = [0u8; 64];
        if matches!(c.read(&mut b), Ok(0) | Err(_)) {
            closed += 1;
        }
    }
    assert_eq!(closed, held.len(), "half-sent requests stayed open");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_connection_is_closed_and_a_streaming_one_is_not() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &["--idle-timeout", "1"]);
    let addr = s.url.trim_start_matches("http://").to_owned();
    // A keep-alive connection that asked once and then says nothing is closed after ~1 s.
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    c.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = [0u8; 4096];
    let n = c.read(&mut b).unwrap();
    assert!(
        b[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&b[..n])
    );
    let t = Instant::now();
    let mut rest = Vec::new();
    let end = c.read_to_end(&mut rest);
    assert!(end.is_ok() && rest.is_empty(), "{end:?} {rest:?}");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(8),
        "closed after {waited:?}"
    );
    if skip_unless_root("the streaming half of an_idle_connection_is_closed...") {
        return;
    }
    // A log stream that writes every 0.2 s outlives the idle timeout: writes count as activity.
    let id = submit(
        &s,
        None,
        json!({"command": "echo first; for i in $(seq 1 20); do sleep 0.2; echo line $i; done"}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client()
            .get(s.u(&format!("/v1/jobs/{id}/logs")))
            .send()
            .await;
        let log = r.unwrap().text().await.unwrap();
        if log.contains("first") {
            break;
        }
        assert!(Instant::now() < deadline, "the job did not start: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = client()
        .get(s.u(&format!("/v1/jobs/{id}/logs/stream")))
        .send()
        .await
        .unwrap();
    let body = r.text().await.expect("the stream was cut");
    assert!(
        body.contains("line 20") && body.contains("event: end"),
        "{body}"
    );
}

// ---------------------------------------------------------------------------------------------
// Medium 11 and 12: secrets.

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_split_between_stderr_and_stdout_is_masked_and_leaves_no_trace_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&data, &[]);
    let secret = format!("hunter2-{}", uuid::Uuid::new_v4().simple());
    let first = &secret[..1];
    let rest = &secret[1..];
    // The first byte to stderr, which then closes; the rest to stdout: whole in the merged log.
    let cmd = format!(
        "printf '{first}' >&2; exec 2>&-; sleep 0.3; printf '{rest}\\n'; echo \"again=$TOKEN\""
    );
    let body = json!({"command": cmd, "secret_env": {"TOKEN": secret}});
    let id = submit(&s, None, body).await;
    wait_for(&s, None, &id, &["completed"], 60).await;
    let (_, log) = call(
        &client(),
        &s,
        "GET",
        &format!("/v1/jobs/{id}/logs"),
        None,
        None,
    )
    .await;
    let log = log.as_str().unwrap().to_owned();
    assert!(!log.contains(&secret), "{log}");
    assert!(log.contains("***"), "{log}");
    assert!(log.contains("again=***"), "{log}");
    // No byte sequence of the secret in any file of the data directory (the database, its WAL,
    // the log, the artifact, the working directory).
    fn scan(dir: &Path, needle: &[u8], hits: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                scan(&p, needle, hits);
            } else if ft.is_file() {
                let b = std::fs::read(&p).unwrap_or_default();
                if b.windows(needle.len()).any(|w| w == needle) {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    let mut hits = Vec::new();
    scan(&data, secret.as_bytes(), &mut hits);
    assert!(hits.is_empty(), "the secret is still on disk in {hits:?}");
}

// ---------------------------------------------------------------------------------------------
// Low 13 and 14: io_uring, the sandbox's name, /docs.

#[tokio::test(flavor = "multi_thread")]
async fn io_uring_is_refused_and_the_sandbox_init_says_what_it_is() {
    if skip_unless_root("io_uring_is_refused_and_the_sandbox_init_says_what_it_is") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let py = "import ctypes; l=ctypes.CDLL(None, use_errno=True); \
              p=ctypes.create_string_buffer(120); \
              r=l.syscall(425, 8, p); print('io_uring_setup', r, 'errno', ctypes.get_errno())";
    let cmd = format!(
        "python3 -c \"{py}\"; printf 'pid1='; tr '\\0' ' ' < /proc/1/cmdline; echo; sleep 2"
    );
    let body = json!({"command": cmd});
    let id = submit(&s, None, body).await;
    // On the host, the running sandbox shows as what it is, not as `jobpack serve`.
    let deadline = Instant::now() + Duration::from_secs(30);
    while host_procs_with("jobpack-sandbox-init").is_empty() {
        assert!(
            Instant::now() < deadline,
            "no jobpack-sandbox-init process on the host"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for(&s, None, &id, &["completed"], 60).await;
    let (_, log) = call(
        &client(),
        &s,
        "GET",
        &format!("/v1/jobs/{id}/logs"),
        None,
        None,
    )
    .await;
    let log = log.as_str().unwrap();
    assert!(log.contains("io_uring_setup -1 errno 1\n"), "{log}");
    assert!(log.contains("pid1=jobpack-sandbox-init"), "{log}");
    assert!(!log.contains("serve"), "{log}");
}

/// The page is made at the first request (http::docs): twenty first requests at once all get
/// the whole page, the same bytes, and so does a later one; the OAuth receiver is there too.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_docs_made_at_the_first_request_are_whole_for_every_request() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let get = |path: &'static str| {
        let url = s.u(path);
        async move {
            let r = client().get(url).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            let kind = r.headers()["content-type"].to_str().unwrap().to_owned();
            assert_eq!(kind, "text/html; charset=utf-8", "{path}");
            r.bytes().await.unwrap()
        }
    };
    let first: Vec<_> = futures_util::future::join_all((0..20).map(|_| get("/docs/"))).await;
    let page = std::str::from_utf8(&first[0]).unwrap();
    assert!(page.contains("SwaggerUIBundle("), "not the Swagger UI");
    assert!(
        page.contains("\"/jobs/{id}\""),
        "the spec is not in the page"
    );
    assert!(page.len() > 1_000_000, "{} bytes", page.len());
    assert!(
        first.iter().all(|p| *p == first[0]),
        "the first requests differ"
    );
    assert_eq!(get("/docs").await, first[0]);
    let receiver = get("/docs/oauth-receiver.html").await;
    assert!(std::str::from_utf8(&receiver).unwrap().contains("oauth2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_docs_cannot_be_framed_or_load_anything_else() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let r = client().get(s.u("/docs/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r
        .headers()
        .get("content-security-policy")
        .expect("a CSP on /docs")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(r.headers().get("x-frame-options").unwrap(), "DENY");
}
