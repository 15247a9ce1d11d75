//! `jobpack run` as a user runs it: the real binary, real namespaces (root only; CI is root).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn skip_unless_root(test: &str) -> bool {
    // SAFETY: a plain id query.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED {test}: `jobpack run` tests need root for the sandbox (CI runs as root)");
        return true;
    }
    false
}

fn jobpack() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_jobpack"));
    c.env(
        "XDG_CACHE_HOME",
        std::env::temp_dir().join("jobpack-test-cache"),
    );
    c
}

fn spec(dir: &Path, yaml: &str) -> std::path::PathBuf {
    let p = dir.join("spec.yaml");
    std::fs::write(&p, yaml).unwrap();
    p
}

#[test]
fn runs_a_spec_streams_its_log_and_exits_with_its_code() {
    if skip_unless_root("runs_a_spec_streams_its_log_and_exits_with_its_code") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(
        tmp.path(),
        "command: 'echo out; echo err >&2; echo \"$GREETING $SECRET\"; exit 7'\n",
    );
    let out = jobpack()
        .args([
            "run",
            s.to_str().unwrap(),
            "--env",
            "GREETING=hi",
            "--secret-env",
            "SECRET=hunter2",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("out\n") && stdout.contains("err\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("hi ***\n") && !stdout.contains("hunter2"),
        "{stdout}"
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("jobpack: failed (exited with status 7)"),
        "{stderr}"
    );
    assert!(stderr.contains("isolation: namespaces"), "{stderr}");
}

#[test]
fn json_outcome_and_limits() {
    if skip_unless_root("json_outcome_and_limits") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(tmp.path(), "command: [sleep, '30']\n");
    let out = jobpack()
        .args([
            "run",
            s.to_str().unwrap(),
            "--timeout",
            "0.5",
            "--memory",
            "64",
            "--cpu",
            "50",
            "--pids",
            "32",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(124),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "timed_out");
    assert_eq!(v["isolation"]["level"], "namespaces");
    let limits: Vec<&str> = v["isolation"]["cgroup_limits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(limits, ["memory", "cpu", "pids"]);
}

#[test]
fn runs_a_packed_artifact() {
    if skip_unless_root("runs_a_packed_artifact") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(
        tmp.path(),
        "command: 'cat /job/jobpack.json | head -c 1; echo; pwd'\n",
    );
    let art = tmp.path().join("a.tar.gz");
    let st = jobpack()
        .args([
            "pack",
            s.to_str().unwrap(),
            "-o",
            art.to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(st.status.success());
    let keep = tmp.path().join("kept");
    let out = jobpack()
        .args([
            "run",
            art.to_str().unwrap(),
            "--keep",
            keep.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "{\n/job/code\n");
    assert!(keep.join("job/run.sh").exists() && keep.join("job.log").exists());
}

#[test]
fn ctrl_c_cancels_cleanly() {
    if skip_unless_root("ctrl_c_cancels_cleanly") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(
        tmp.path(),
        "command: \"trap 'echo got TERM' TERM; echo ready; while true; do sleep 0.1; done\"\n",
    );
    let mut child = jobpack()
        .args(["run", s.to_str().unwrap(), "--grace", "0.5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut stdout, &mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let t = Instant::now();
    let status = child.wait().unwrap();
    assert!(t.elapsed() < Duration::from_secs(20));
    assert_eq!(status.code(), Some(130));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(rest.contains("got TERM"), "{rest}");
}

#[test]
fn bad_arguments_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(tmp.path(), "command: 'true'\n");
    let out = jobpack()
        .args(["run", s.to_str().unwrap(), "--env", "1BAD=x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid variable name"));
    let out = jobpack()
        .args(["run", s.to_str().unwrap(), "--timeout", "0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("positive number"));
}

#[test]
fn a_log_that_cannot_be_written_fails_the_run_but_a_closed_pipe_does_not() {
    if skip_unless_root("a_log_that_cannot_be_written_fails_the_run_but_a_closed_pipe_does_not") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(tmp.path(), "command: 'echo hello'\n");
    // A full disk behind the redirect: the output asked for is lost, so not a success.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = jobpack()
        .args(["run", s.to_str().unwrap()])
        .stdout(full)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot write the job's log to stdout: No space left on device"),
        "{stderr}"
    );
    // A reader that went away (`| head`) is the user's choice: the job's own code.
    let mut child = jobpack()
        .args(["run", s.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("cannot write"), "{stderr}");
}
