//! The `jobpack` client commands against the real server binary on 127.0.0.1 (token auth), run
//! as real processes: every subcommand, id prefixes, `--json` shapes, following to completion,
//! resuming a dropped log stream, exit codes, and mutual TLS options.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Launch, Pki, Server, jobpack_in};
use serde_json::{Value, json};

const ADMIN: &str = "jp_client-test-admin-token-0123456789";

fn token_server(data: &Path, args: &[&str]) -> Server {
    Server::launch(
        data,
        Launch {
            args,
            env: &[("JOBPACK_ADMIN_TOKEN", ADMIN)],
            capture_stderr: false,
        },
    )
}

/// Runs `jobpack ARGS` in `dir` against the server `s` with the admin token.
struct Cli<'a> {
    dir: &'a Path,
    url: String,
    token: String,
}

impl Cli<'_> {
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        jobpack_in(
            self.dir,
            args,
            &[
                ("JOBPACK_SERVER", &self.url),
                ("JOBPACK_TOKEN", &self.token),
            ],
        )
    }

    /// Runs and expects exit code 0; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "jobpack {args:?}: {err}\n{out}");
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    fn wait(&self, id: &str, want: &str) -> Value {
        for _ in 0..600 {
            let v = self.json(&["status", id]);
            if v["status"] == want {
                return v;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{id} never reached {want}");
    }
}

fn sha256(b: &[u8]) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b))
}

#[test]
fn every_subcommand_with_prefixes_json_and_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = token_server(&tmp.path().join("data"), &[]);
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let cli = Cli {
        dir: &work,
        url: s.url.clone(),
        token: ADMIN.into(),
    };
    let w = |name: &str, text: &str| std::fs::write(work.join(name), text).unwrap();
    w(
        "fail.json",
        r#"{"name": "fails", "command": "echo one; echo two; exit 3"}"#,
    );
    w(
        "ok.yaml",
        "name: fine\ncommand: echo made > out.txt; echo done\n",
    );
    w(
        "slow.json",
        r#"{"name": "slow", "command": "echo begin; sleep 1; echo middle; sleep 1; echo end"}"#,
    );
    w(
        "long.json",
        r#"{"name": "long", "command": "echo started; sleep 60"}"#,
    );
    w("bad.json", r#"{"command": "true", "unknown_field": 1}"#);

    // submit --follow: the log on stdout, the job's exit code as ours.
    let (code, out, err) = cli.run(&["submit", "fail.json", "--follow"]);
    assert_eq!((code, out.as_str()), (3, "one\ntwo\n"), "{err}");
    assert!(err.contains("failed (exit code 3)"), "{err}");
    // submit --json: the server's answer; a YAML spec; pack only.
    let created = cli.json(&["submit", "ok.yaml"]);
    assert_eq!(created["status"], "queued");
    let ok = created["job_id"].as_str().unwrap().to_owned();
    let packed = cli.json(&["submit", "ok.yaml", "--no-run", "--name", "pack-only"]);
    let packed = packed["job_id"].as_str().unwrap().to_owned();
    // A directory (its jobpack.yaml) and an archive (with --command), with limits.
    let dir = work.join("proj");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.sh"), "echo from the dir; cat data.txt\n").unwrap();
    std::fs::write(dir.join("data.txt"), "dir data\n").unwrap();
    std::fs::write(dir.join("jobpack.yaml"), "command: sh main.sh\n").unwrap();
    let (code, out, err) = cli.run(&["submit", "proj", "-f", "--timeout", "60", "--memory", "256"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "from the dir\ndir data\n"),
        "{err}"
    );
    let zip = work.join("code.zip");
    let st = std::process::Command::new("python3")
        .args(["-c", "import sys,zipfile; z=zipfile.ZipFile(sys.argv[1],'w'); z.writestr('run.sh','echo zipped\\n'); z.close()"])
        .arg(&zip)
        .status()
        .unwrap();
    assert!(st.success());
    let (code, out, err) = cli.run(&["submit", "code.zip", "--command", "sh run.sh", "--follow"]);
    assert_eq!((code, out.as_str()), (0, "zipped\n"), "{err}");

    // status by a prefix: a table, or the server's JSON.
    let v = cli.wait(&ok[..8], "completed");
    assert_eq!(v["job_id"], ok.as_str());
    assert_eq!(v["exit_code"], 0);
    let table = cli.ok(&["status", &ok[..6]]);
    assert!(table.contains(&format!("job          {ok}")), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("status") && l.ends_with("completed")),
        "{table}"
    );
    cli.wait(&packed, "packed");

    // list: a table with short ids; --json is the server's list; --status filters.
    let table = cli.ok(&["list"]);
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("ID") && header.contains("STATUS") && header.contains("OWNER"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&ok[..8]) && l.contains("fine") && l.contains("completed")),
        "{table}"
    );
    let l = cli.json(&["list", "--status", "failed"]);
    assert_eq!(l["total"], 1, "{l}");
    assert_eq!(l["jobs"][0]["name"], "fails");
    assert_eq!(
        cli.json(&["list", "--name", "pack-only"])["jobs"][0]["job_id"],
        packed.as_str()
    );

    // logs: the whole log, the tail, and -f on a running job through to its end.
    assert_eq!(cli.ok(&["logs", &ok[..7]]), "done\n");
    assert_eq!(cli.ok(&["logs", &ok, "--tail", "3"]), "ne\n");
    let slow = cli.json(&["submit", "slow.json"])["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(cli.ok(&["logs", "-f", &slow[..8]]), "begin\nmiddle\nend\n");

    // download: the artifact (checked against its sha256) by default, the tarball, one file, stdout.
    let art_sha = cli.json(&["status", &ok])["artifact_sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let d = cli.json(&["download", &ok[..8]]);
    assert_eq!(d["sha256"], art_sha.as_str());
    let default_name = work.join(format!("{ok}.tar.gz"));
    assert_eq!(sha256(&std::fs::read(&default_name).unwrap()), art_sha);
    cli.ok(&["download", &ok, "--tarball", "-o", "work.tgz"]);
    assert!(std::fs::metadata(work.join("work.tgz")).unwrap().len() > 0);
    cli.ok(&["download", &ok, "--file", "code/out.txt", "-o", "out.txt"]);
    assert_eq!(
        std::fs::read_to_string(work.join("out.txt")).unwrap(),
        "made\n"
    );
    assert_eq!(
        cli.ok(&["download", &ok, "--file", "code/out.txt", "-o", "-"]),
        "made\n"
    );
    let (code, _, err) = cli.run(&["download", &ok, "--file", "code/missing", "-o", "missing"]);
    assert_eq!(code, 3, "{err}");
    assert!(!work.join("missing").exists(), "nothing half-written");

    // cancel a running job; a second cancel is a conflict (6).
    let long = cli.json(&["submit", "long.json"])["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    cli.wait(&long, "running");
    assert_eq!(
        cli.ok(&["cancel", &long[..8]]),
        format!("stopping {long}\n")
    );
    cli.wait(&long, "stopped");
    let (code, _, err) = cli.run(&["cancel", &long]);
    assert_eq!(code, 6, "{err}");

    // rm, then the job is gone (3).
    assert_eq!(
        cli.json(&["rm", &long[..8]]),
        json!({"job_id": long, "deleted": true})
    );
    let (code, _, _) = cli.run(&["status", &long]);
    assert_eq!(code, 3);

    // Prefixes: ambiguous and unknown ones are refused (3), naming the matches. With 17 jobs two
    // share a first hex digit.
    let c = http::poster();
    for _ in 0..12 {
        c(
            &s.u("/v1/jobs"),
            ADMIN,
            r#"{"command": "true", "run": false}"#,
        );
    }
    let all = cli.json(&["list", "--limit", "100"]);
    let ids: Vec<String> = all["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.len() >= 17, "{}", ids.len());
    let shared = ids
        .iter()
        .map(|i| &i[..1])
        .find(|p| ids.iter().filter(|i| i.starts_with(*p)).count() > 1)
        .unwrap();
    let (code, _, err) = cli.run(&["status", shared]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("ambiguous"), "{err}");
    let unknown = (0..=0xffffu32)
        .map(|n| format!("{n:04x}"))
        .find(|p| !ids.iter().any(|i| i.starts_with(p.as_str())))
        .unwrap();
    let (code, _, err) = cli.run(&["logs", &unknown]);
    assert_eq!(code, 3, "{err}");
    let (code, _, _) = cli.run(&["status", "not-hex!"]);
    assert_eq!(code, 2);

    // Exit codes: invalid spec 2, bad token 4, a viewer submitting 4, no server 5.
    let (code, _, err) = cli.run(&["submit", "bad.json"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown_field"), "{err}");
    let bad = Cli {
        dir: &work,
        url: s.url.clone(),
        token: "jp_nope-nope-nope-nope".into(),
    };
    assert_eq!(bad.run(&["list"]).0, 4);
    let viewer = c(
        &s.u("/v1/users"),
        ADMIN,
        r#"{"name": "vic", "role": "viewer"}"#,
    );
    assert_eq!(viewer["name"], "vic");
    let t = c(&s.u("/v1/users/vic/tokens"), ADMIN, "{}");
    let vic = Cli {
        dir: &work,
        url: s.url.clone(),
        token: t["token"].as_str().unwrap().into(),
    };
    // A viewer reads everyone's jobs (and may submit none).
    assert!(vic.json(&["list"])["total"].as_u64().unwrap() > 0);
    let (code, _, err) = vic.run(&["submit", "ok.yaml"]);
    assert_eq!(code, 4, "{err}");
    let gone = Cli {
        dir: &work,
        url: "http://127.0.0.1:9".into(),
        token: ADMIN.into(),
    };
    let (code, _, err) = gone.run(&["list"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("cannot reach"), "{err}");

    // Shell completions.
    for shell in ["bash", "zsh", "fish"] {
        let out = cli.ok(&["completions", shell]);
        assert!(
            out.contains("jobpack") && out.contains("download"),
            "{shell}"
        );
    }
}

/// A tiny POST helper on a plain thread (the tests here are synchronous).
mod http {
    pub fn poster() -> impl Fn(&str, &str, &str) -> serde_json::Value {
        |url: &str, token: &str, body: &str| {
            let (url, token, body) = (url.to_owned(), token.to_owned(), body.to_owned());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let r = reqwest::Client::new()
                        .post(url)
                        .bearer_auth(token)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "{}", r.status());
                    r.json().await.unwrap()
                })
            })
            .join()
            .unwrap()
        }
    }
}

/// A proxy on 127.0.0.1 that cuts every connection after `life`: a log follower behind it loses
/// its stream several times and must resume exactly.
fn cutting_proxy(target: std::net::SocketAddr, life: Duration) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    break;
                };
                tokio::spawn(async move {
                    let Ok(mut out) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = tokio::time::timeout(
                        life,
                        tokio::io::copy_bidirectional(&mut inbound, &mut out),
                    )
                    .await;
                });
            }
        });
    });
    format!("http://{addr}")
}

#[test]
fn follow_resumes_exactly_after_dropped_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let s = token_server(&tmp.path().join("data"), &[]);
    let cli = Cli {
        dir: tmp.path(),
        url: s.url.clone(),
        token: ADMIN.into(),
    };
    std::fs::write(
        tmp.path().join("ticks.json"),
        r#"{"command": "i=1; while [ $i -le 12 ]; do echo tick $i; i=$((i+1)); sleep 0.25; done"}"#,
    )
    .unwrap();
    let id = cli.json(&["submit", "ticks.json"])["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let target: std::net::SocketAddr = s.url.trim_start_matches("http://").parse().unwrap();
    let behind = Cli {
        dir: tmp.path(),
        url: cutting_proxy(target, Duration::from_millis(700)),
        token: ADMIN.into(),
    };
    let out = behind.ok(&["logs", "-f", &id]);
    let want: String = (1..=12).map(|i| format!("tick {i}\n")).collect();
    assert_eq!(out, want);
}

#[test]
fn the_client_speaks_mutual_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::new("client test CA");
    let (cert, key) = pki.leaf(&["127.0.0.1"], "server", &[], true);
    let (ccert, ckey) = pki.leaf(&[], "ann", &["submitter"], false);
    for (f, t) in [
        ("s.pem", &cert),
        ("s.key", &key),
        ("ca.pem", &pki.ca_pem),
        ("ann.pem", &ccert),
        ("ann.key", &ckey),
    ] {
        std::fs::write(dir.join(f), t).unwrap();
    }
    let p = |f: &str| dir.join(f).display().to_string();
    let s = token_server(
        &dir.join("data"),
        &[
            "--tls-cert",
            &p("s.pem"),
            "--tls-key",
            &p("s.key"),
            "--tls-client-ca",
            &p("ca.pem"),
        ],
    );
    std::fs::write(dir.join("j.json"), r#"{"command": "echo over mtls"}"#).unwrap();
    let env = [("JOBPACK_SERVER", s.url.as_str())];
    let tls = ["--ca-cert", &p("ca.pem")];
    let (code, out, err) = jobpack_in(
        dir,
        &[
            &[
                "submit",
                "j.json",
                "-f",
                "--client-cert",
                &p("ann.pem"),
                "--client-key",
                &p("ann.key"),
            ][..],
            &tls,
        ]
        .concat(),
        &env,
    );
    assert_eq!((code, out.as_str()), (0, "over mtls\n"), "{err}");
    let (code, out, err) = jobpack_in(
        dir,
        &[
            &[
                "list",
                "--json",
                "--client-cert",
                &p("ann.pem"),
                "--client-key",
                &p("ann.key"),
            ][..],
            &tls,
        ]
        .concat(),
        &env,
    );
    assert_eq!(code, 0, "{err}");
    let l: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(l["jobs"][0]["owner"], "ann");
    // No certificate and no token: 401 -> 4; a token instead of a certificate works.
    let (code, _, _) = jobpack_in(dir, &[&["list"][..], &tls].concat(), &env);
    assert_eq!(code, 4);
    let (code, _, err) = jobpack_in(dir, &[&["list", "--token", ADMIN][..], &tls].concat(), &env);
    assert_eq!(code, 0, "{err}");
    // Without the CA the server's certificate is not trusted: cannot reach (5).
    let (code, _, err) = jobpack_in(dir, &["list", "--token", ADMIN], &env);
    assert_eq!(code, 5, "{err}");
}

#[test]
fn batches_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let s = token_server(&tmp.path().join("data"), &[]);
    let cli = Cli {
        dir: tmp.path(),
        url: s.url.clone(),
        token: ADMIN.into(),
    };
    let w = |name: &str, text: &str| std::fs::write(tmp.path().join(name), text).unwrap();
    w(
        "suite.yaml",
        "name: suite\ndescription: three tests\njobs:\n  - {name: a, command: 'true'}\n  \
         - {name: b, command: 'exit 4'}\n  - {name: c, command: 'echo c', limits: {timeout: 30}}\n",
    );
    w(
        "slow.yaml",
        "jobs:\n  - {command: 'sleep 60'}\n  - {command: 'sleep 60'}\n",
    );
    w(
        "bad.yaml",
        "jobs:\n  - {command: 'true'}\n  - {command: 'true', nope: 1}\n",
    );

    // --follow prints the counters until the end; one job failed, so exit 1.
    let (code, _, err) = cli.run(&["batch", "submit", "suite.yaml", "--follow"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("failed 3/3 done: 2 completed, 1 failed, 0 stopped"),
        "{err}"
    );
    let l = cli.json(&["batch", "list"]);
    let id = l["batches"][0]["batch_id"].as_str().unwrap().to_owned();
    assert_eq!(l["batches"][0]["name"], "suite");
    let table = cli.ok(&["batch", "status", &id[..6]]);
    assert!(table.contains("2 completed, 1 failed"), "{table}");
    for (name, status) in [("a", "completed"), ("b", "failed"), ("c", "completed")] {
        assert!(
            table
                .lines()
                .any(|l| l.contains(&format!(" {name} ")) && l.contains(status)),
            "{table}"
        );
    }
    let b = cli.json(&["batch", "status", &id]);
    assert_eq!(b["jobs"].as_array().unwrap().len(), 3);
    assert_eq!(cli.json(&["list", "--batch", &id])["total"], 3);

    // Cancel; an invalid batch is refused whole, naming the job (exit 2).
    let slow = cli.ok(&["batch", "submit", "slow.yaml"]).trim().to_owned();
    let out = cli.ok(&["batch", "cancel", &slow[..8]]);
    assert!(out.starts_with(&format!("stopping batch {slow}")), "{out}");
    let (code, _, err) = cli.run(&["batch", "submit", "bad.yaml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("jobs[1]"), "{err}");
    assert_eq!(
        cli.json(&["batch", "list"])["batches"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}
