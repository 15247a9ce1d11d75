//! `jobpack rnx` (and `rnx`, a link to the binary) against a real server: every verb the gRPC job
//! service's command line has, with its flags, printed blocks and status words.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;

fn rnx(bin: &std::path::Path, server: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin)
        .args(args)
        .env("JOBLET_SERVER", server)
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

#[test]
fn every_rnx_verb_as_the_seed_shows_it() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let url = s.u("");
    // An `rnx` link to the binary is `jobpack rnx`.
    let link = tmp.path().join("rnx");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_jobpack"), &link).unwrap();
    let jobpack = std::path::PathBuf::from(env!("CARGO_BIN_EXE_jobpack"));

    let (code, out, err) = rnx(
        &link,
        &url,
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
    let (code, out, _) = rnx(&jobpack, &url, &["rnx", "log", &id]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!("Logs for job {id}")) && out.contains("hello from rnx"),
        "{out}"
    );
    let (_, out, _) = rnx(&link, &url, &["log", "--follow=false", &id]);
    assert_eq!(out, "hello from rnx\n");
    let (_, out, _) = rnx(&link, &url, &["status", &id]);
    assert_eq!(
        (field(&out, "Status"), field(&out, "ExitCode")),
        ("COMPLETED", "0"),
        "{out}"
    );
    assert_eq!(field(&out, "MaxCPU"), "50");

    // stop a running job: STOPPED, exit code -1.
    let (_, out, _) = rnx(&link, &url, &["run", "sh", "-c", "sleep 60"]);
    let long = field(&out, "ID").to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    while field(&rnx(&link, &url, &["status", &long]).1, "Status") != "RUNNING" {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, out, err) = rnx(&link, &url, &["stop", &long]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("Job stopped successfully:\n"), "{out}");
    assert_eq!(
        (field(&out, "Status"), field(&out, "ExitCode")),
        ("STOPPED", "-1")
    );
    let (_, out, _) = rnx(&link, &url, &["list"]);
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
        tmp.path().join("pipeline.yaml"),
        "jobs:\n  setup-data:\n    command: \"sh\"\n    args: [\"-c\", \"echo setup\"]\n\n  \
         process-data:\n    command: \"sh\"\n    args: [\"-c\", \"echo process\"]\n    requires:\n      \
         - setup-data: \"COMPLETED\"\n",
    )
    .unwrap();
    let wf = tmp.path().join("pipeline.yaml");
    let (code, out, err) = rnx(
        &link,
        &url,
        &["run", &format!("--workflow={}", wf.display())],
    );
    assert_eq!(code, 0, "{err}");
    let wid = field(&out, "ID").to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let (_, out, _) = rnx(&link, &url, &["status", "--workflow", &wid]);
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
    let (_, out, _) = rnx(&link, &url, &["list", "--workflow"]);
    assert!(out.contains(&wid), "{out}");
    // A job pinned to one core: its cpuset says so; cores the machine lacks are refused.
    let (code, out, err) = rnx(
        &link,
        &url,
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
    let (_, out, _) = rnx(&link, &url, &["log", &pinned]);
    assert!(out.contains("Cpus_allowed_list:\t0"), "{out}");
    assert_eq!(
        field(&rnx(&link, &url, &["status", &pinned]).1, "CPUCores"),
        "0"
    );
    let (code, _, err) = rnx(&link, &url, &["run", "--cpu-cores=4000", "true"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not available"), "{err}");
    // A scheduled job: SCHEDULED, then started on time.
    let at =
        humantime::format_rfc3339_millis(std::time::SystemTime::now() + Duration::from_secs(3))
            .to_string();
    let (code, out, err) = rnx(
        &link,
        &url,
        &["run", &format!("--schedule={at}"), "sh", "-c", "echo later"],
    );
    assert_eq!(code, 0, "{err}");
    let sid = field(&out, "ID").to_owned();
    assert_eq!(field(&out, "ScheduledTime"), at);
    assert_eq!(
        field(&rnx(&link, &url, &["status", &sid]).1, "Status"),
        "SCHEDULED"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let out = loop {
        let (_, out) = (0, rnx(&link, &url, &["status", &sid]).1);
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
    // Errors: an empty command, an unknown job.
    assert_eq!(rnx(&link, &url, &["run"]).0, 2);
    assert_eq!(
        rnx(
            &link,
            &url,
            &["status", "f47ac10b-58cc-4372-a567-0e02b2c3d479"]
        )
        .0,
        3
    );
}
