//! `jobpack rnx` (and `rnx`, a link to the binary) against a real server, over both doors
//! `--server` can name (the HTTP API by URL, the gRPC door by `host:port` as the seed writes it):
//! every verb the gRPC job service's command line has, with its flags, printed blocks and status
//! words.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Launch, Pki, Server};

/// Where rnx is pointed: `JOBLET_SERVER` and, for the gRPC door, the seed's certificate variables.
struct Door {
    server: String,
    env: Vec<(String, String)>,
}

fn rnx(bin: &std::path::Path, door: &Door, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin)
        .args(args)
        .env("JOBLET_SERVER", &door.server)
        .envs(door.env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name}: in {out}"))
}

/// An `rnx` link to the binary, in `dir`.
fn link(dir: &std::path::Path) -> std::path::PathBuf {
    let link = dir.join("rnx");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_jobpack"), &link).unwrap();
    link
}

/// Every verb through `url` (either door); `link` is an `rnx` link to the binary.
fn every_verb(tmp: &std::path::Path, link: &std::path::Path, url: &Door) {
    let jobpack = std::path::PathBuf::from(env!("CARGO_BIN_EXE_jobpack"));

    let (code, out, err) = rnx(
        link,
        url,
        &[
            "run",
            "--max-cpu=50",
            "--max-memory=512",
            "sh",
            "-c",
            "echo hello from rnx",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("Job started:\n"), "{out}");
    let id = field(&out, "ID").to_owned();
    assert_eq!(field(&out, "Status"), "INITIALIZING");
    assert_eq!(
        (field(&out, "MaxCPU"), field(&out, "MaxMemory")),
        ("50", "512")
    );
    assert_eq!(field(&out, "Command"), "sh -c echo hello from rnx");

    // log follows by default, to the end.
    let (code, out, _) = rnx(&jobpack, url, &["rnx", "log", &id]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!("Logs for job {id}")) && out.contains("hello from rnx"),
        "{out}"
    );
    let (_, out, _) = rnx(link, url, &["log", "--follow=false", &id]);
    assert_eq!(out, "hello from rnx\n");
    let (_, out, _) = rnx(link, url, &["status", &id]);
    assert_eq!(
        (field(&out, "Status"), field(&out, "ExitCode")),
        ("COMPLETED", "0"),
        "{out}"
    );
    assert_eq!(field(&out, "MaxCPU"), "50");

    // --follow=false while the job runs: what it wrote so far, at once. Then stop it:
    // STOPPED, exit code -1.
    let (_, out, _) = rnx(link, url, &["run", "sh", "-c", "echo first; sleep 60"]);
    let long = field(&out, "ID").to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    while rnx(link, url, &["log", "--follow=false", &long]).1 != "first\n" {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        field(&rnx(link, url, &["status", &long]).1, "Status"),
        "RUNNING"
    );
    let (code, out, err) = rnx(link, url, &["stop", &long]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("Job stopped successfully:\n"), "{out}");
    assert_eq!(
        (field(&out, "Status"), field(&out, "ExitCode")),
        ("STOPPED", "-1")
    );
    let (_, out, _) = rnx(link, url, &["list"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("{id} COMPLETED StartTime: "))),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("{long} STOPPED "))),
        "{out}"
    );

    // A workflow: the seed's file verbatim.
    std::fs::write(
        tmp.join("pipeline.yaml"),
        "jobs:\n  setup-data:\n    command: \"sh\"\n    args: [\"-c\", \"echo setup\"]\n\n  \
         process-data:\n    command: \"sh\"\n    args: [\"-c\", \"echo process\"]\n    requires:\n      \
         - setup-data: \"COMPLETED\"\n",
    )
    .unwrap();
    let wf = tmp.join("pipeline.yaml");
    let (code, out, err) = rnx(link, url, &["run", &format!("--workflow={}", wf.display())]);
    assert_eq!(code, 0, "{err}");
    let wid = field(&out, "ID").to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let (_, out, _) = rnx(link, url, &["status", "--workflow", &wid]);
        if field(&out, "Status") == "COMPLETED" {
            break out;
        }
        assert!(Instant::now() < deadline, "{out}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.contains("process-data COMPLETED") && status.contains("depends on: setup-data"),
        "{status}"
    );
    let (_, out, _) = rnx(link, url, &["list", "--workflow"]);
    assert!(out.contains(&wid), "{out}");
    // A job pinned to one core: its cpuset says so; cores the machine lacks are refused.
    let (code, out, err) = rnx(
        link,
        url,
        &[
            "run",
            "--cpu-cores=0",
            "grep",
            "Cpus_allowed_list",
            "/proc/self/status",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let pinned = field(&out, "ID").to_owned();
    let (_, out, _) = rnx(link, url, &["log", &pinned]);
    assert!(out.contains("Cpus_allowed_list:\t0"), "{out}");
    assert_eq!(
        field(&rnx(link, url, &["status", &pinned]).1, "CPUCores"),
        "0"
    );
    let (code, _, err) = rnx(link, url, &["run", "--cpu-cores=4000", "true"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not available"), "{err}");
    // A scheduled job: SCHEDULED, then started on time.
    let at =
        humantime::format_rfc3339_millis(std::time::SystemTime::now() + Duration::from_secs(3))
            .to_string();
    let (code, out, err) = rnx(
        link,
        url,
        &["run", &format!("--schedule={at}"), "sh", "-c", "echo later"],
    );
    assert_eq!(code, 0, "{err}");
    let sid = field(&out, "ID").to_owned();
    assert_eq!(field(&out, "ScheduledTime"), at);
    assert_eq!(
        field(&rnx(link, url, &["status", &sid]).1, "Status"),
        "SCHEDULED"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let out = loop {
        let (_, out) = (0, rnx(link, url, &["status", &sid]).1);
        if field(&out, "Status") == "COMPLETED" {
            break out;
        }
        assert!(Instant::now() < deadline, "{out}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let started = humantime::parse_rfc3339(field(&out, "Started At")).unwrap();
    let late = started
        .duration_since(humantime::parse_rfc3339(&at).unwrap())
        .expect("not before its time");
    assert!(late < Duration::from_secs(1), "{late:?}");
    // Errors: an empty command, an unknown job.
    assert_eq!(rnx(link, url, &["run"]).0, 2);
    assert_eq!(
        rnx(
            link,
            url,
            &["status", "f47ac10b-58cc-4372-a567-0e02b2c3d479"]
        )
        .0,
        3
    );
}

#[test]
fn every_rnx_verb_as_the_seed_shows_it() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let url = s.u("");
    let door = Door {
        server: url.clone(),
        env: Vec::new(),
    };
    every_verb(tmp.path(), &link(tmp.path()), &door);
    let jobpack = std::path::PathBuf::from(env!("CARGO_BIN_EXE_jobpack"));
    // `jobpack submit -- CMD ARGS...`: a bare command without a spec file.
    let out = Command::new(&jobpack)
        .args([
            "submit",
            "--server",
            &url,
            "--follow",
            "--",
            "sh",
            "-c",
            "echo bare $((6*7))",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "bare 42\n");
}

#[test]
fn every_rnx_verb_over_the_grpc_door() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let pki = Pki::new("jobpack test CA");
    std::fs::write(certs.join("ca-cert.pem"), &pki.ca_pem).unwrap();
    for (name, cn, ous, server) in [
        ("server", "localhost", vec![], true),
        ("admin-client", "alice", vec!["admin"], false),
        ("viewer-client", "vera", vec!["viewer"], false),
    ] {
        let (cert, key) = pki.leaf(&["localhost", "127.0.0.1"], cn, &ous, server);
        std::fs::write(certs.join(format!("{name}-cert.pem")), cert).unwrap();
        std::fs::write(certs.join(format!("{name}-key.pem")), key).unwrap();
    }
    let c = |n: &str| certs.join(n).display().to_string();
    let mut s = Server::launch(
        &tmp.path().join("data"),
        Launch {
            args: &[
                "--tls-cert",
                &c("server-cert.pem"),
                "--tls-key",
                &c("server-key.pem"),
                "--tls-client-ca",
                &c("ca-cert.pem"),
                "--grpc-listen",
                "127.0.0.1:0",
            ],
            env: &[(
                "JOBPACK_ADMIN_TOKEN",
                "jp_test-admin-token-0123456789abcdef",
            )],
            capture_stderr: false,
        },
    );
    let addr = s.grpc_addr();
    // The seed's environment variables, as its README sets them.
    let door = |who: &str| Door {
        server: addr.clone(),
        env: vec![
            (
                "JOBLET_CERT_PATH".into(),
                c(&format!("{who}-client-cert.pem")),
            ),
            (
                "JOBLET_KEY_PATH".into(),
                c(&format!("{who}-client-key.pem")),
            ),
            ("JOBLET_CA_PATH".into(), c("ca-cert.pem")),
        ],
    };
    let link = link(tmp.path());
    every_verb(tmp.path(), &link, &door("admin"));

    // The seed's own example: flags rather than variables.
    let out = Command::new(&link)
        .arg(format!("--server={addr}"))
        .arg(format!("--cert={}", c("admin-client-cert.pem")))
        .arg(format!("--key={}", c("admin-client-key.pem")))
        .arg(format!("--ca={}", c("ca-cert.pem")))
        .args(["run", "echo", "remote execution on Linux"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(field(&text, "Command"), "echo remote execution on Linux");
    // A viewer reads, never runs or stops: the seed's message, exit code 4.
    let viewer = door("viewer");
    let (code, _, err) = rnx(&link, &viewer, &["run", "true"]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("role viewer is not allowed to perform operation run_job"),
        "{err}"
    );
    let id = field(&text, "ID");
    assert_eq!(rnx(&link, &viewer, &["status", id]).0, 0);
    let (code, _, err) = rnx(&link, &viewer, &["stop", id]);
    assert_eq!(code, 4, "{err}");
    // Without a client certificate the door refuses the call.
    let anonymous = Door {
        server: addr.clone(),
        env: vec![("JOBLET_CA_PATH".into(), c("ca-cert.pem"))],
    };
    let (code, _, err) = rnx(&link, &anonymous, &["list"]);
    assert_ne!(code, 0, "{err}");
    // Without a CA there is nothing to check the server against: a clear refusal.
    let (code, _, err) = rnx(
        &link,
        &Door {
            server: addr.clone(),
            env: Vec::new(),
        },
        &["list"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--ca"), "{err}");
}
