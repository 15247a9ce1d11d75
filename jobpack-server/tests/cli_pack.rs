//! `jobpack pack` as a user runs it: the real binary, a git daemon and a data server on 127.0.0.1.

#[path = "../../jobpack-core/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use support::*;

fn jobpack(dir: &Path, shell_prefix: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    // Through `sh -c` so the umask can differ between runs.
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "{shell_prefix} exec '{}' {}",
        env!("CARGO_BIN_EXE_jobpack"),
        quoted.join(" ")
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .current_dir(dir)
        .env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn json_line(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "jobpack failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "--json prints one line: {stdout}"
    );
    serde_json::from_str(&stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn same_spec_same_bytes_across_dirs_umask_tz_and_locale() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let repos = root.join("repos");
    let fx = fixture_repo(&repos, "app", true);
    let daemon = GitDaemon::start(&repos);
    let data = DataServer::start().await;
    let body: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let url = data.route("/d.bin", Route::Bytes(Arc::new(body.clone())));
    let spec = serde_json::json!({
        "name": "repro",
        "git_url": daemon.url("app.git"),
        "commit_hash": fx.commits[0],
        "data": [{"url": url, "path": "nested/d.bin"}],
        "command": ["python3", "run.py"],
        "env": {"B": "2", "A": "1"},
    });
    let spec_path = root.join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();

    let mut results = Vec::new();
    for (i, (prefix, tz, lc)) in [
        ("umask 022;", "UTC", "C.UTF-8"),
        ("umask 077;", "Pacific/Kiritimati", "de_DE.UTF-8"),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = root.join(format!("run{i}"));
        let work = dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        let out = jobpack(
            &dir,
            prefix,
            &[
                "pack",
                spec_path.to_str().unwrap(),
                "--json",
                "--no-cache",
                "--work-dir",
                "work",
            ],
            &[("TZ", tz), ("LC_ALL", lc), ("LANG", lc)],
        );
        let v = json_line(&out);
        let artifact = dir.join(v["artifact"].as_str().unwrap());
        assert!(
            artifact.starts_with(&dir),
            "default output is in the current directory"
        );
        let bytes = std::fs::read(&artifact).unwrap();
        assert_eq!(v["size"], bytes.len() as u64);
        assert_eq!(v["commit"], fx.commits[0].as_str());
        results.push((v["sha256"].as_str().unwrap().to_owned(), bytes));
    }
    assert_eq!(results[0].0, results[1].0, "same spec, different sha256");
    assert!(results[0].1 == results[1].1);

    // One byte of data changed: a different artifact.
    let mut changed = body.clone();
    changed[12345] ^= 1;
    data.route("/d.bin", Route::Bytes(Arc::new(changed)));
    let out = jobpack(
        root,
        "",
        &[
            "pack",
            spec_path.to_str().unwrap(),
            "--json",
            "--no-cache",
            "-o",
            "changed.tar.gz",
        ],
        &[],
    );
    let v = json_line(&out);
    assert_ne!(v["sha256"].as_str().unwrap(), results[0].0);

    // SOURCE_DATE_EPOCH, when set, is the mtime of every entry.
    let out = jobpack(
        root,
        "",
        &[
            "pack",
            spec_path.to_str().unwrap(),
            "--json",
            "--no-cache",
            "-o",
            "sde.tar.gz",
        ],
        &[("SOURCE_DATE_EPOCH", "1234567890")],
    );
    json_line(&out);
    let f = std::fs::File::open(root.join("sde.tar.gz")).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    for e in ar.entries().unwrap() {
        assert_eq!(e.unwrap().header().mtime().unwrap(), 1_234_567_890);
    }
}

#[test]
fn bad_input_exits_2_with_one_line_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("bad.yaml");
    std::fs::write(&spec, "command: x\ndata:\n  - url: ftp://h/x\n").unwrap();
    let out = jobpack(tmp.path(), "", &["pack", spec.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: invalid job spec: data[0].url: only http and https"),
        "{err}"
    );

    std::fs::write(&spec, "command: x\nextra: 1\n").unwrap();
    let out = jobpack(tmp.path(), "", &["pack", spec.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `extra`"));

    let out = jobpack(tmp.path(), "", &["pack", "does-not-exist.json"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the job spec"));
}

#[test]
fn a_failed_pack_exits_1_and_leaves_no_artifact() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("s.json");
    let port = free_port();
    std::fs::write(
        &spec,
        format!(
            r#"{{"git_url": "git://127.0.0.1:{port}/x.git",
                "commit_hash": "0123456789abcdef0123456789abcdef01234567", "command": "x"}}"#
        ),
    )
    .unwrap();
    std::fs::create_dir(tmp.path().join("work")).unwrap();
    let out = jobpack(
        tmp.path(),
        "",
        &[
            "pack",
            "s.json",
            "-o",
            "out.tar.gz",
            "--no-cache",
            "--work-dir",
            "work",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("cannot reach repository"), "{err}");
    assert!(!tmp.path().join("out.tar.gz").exists());
    assert_eq!(
        std::fs::read_dir(tmp.path().join("work")).unwrap().count(),
        0
    );
}
