//! The seeds' own calls, sent as their READMEs show them (with `curl`, only host and port
//! changed) to a real `jobpack serve` on 127.0.0.1: the FastAPI job runner's (seed 002) and the
//! job daemon's (seed 000), both at `/jobs`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{FINAL, Server};
use serde_json::Value;

/// Runs `curl` with `args` (a seed's command line after `curl`), in `dir`; its stdout.
fn curl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("curl (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn curl_status(dir: &Path, args: &[&str]) -> (u16, String) {
    let mut all = vec!["-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let out = curl(dir, &all);
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_owned())
}

async fn job(s: &Server, id: &str) -> Value {
    reqwest::get(s.u(&format!("/jobs/{id}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_final(s: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let v = job(s, id).await;
        if FINAL.contains(&v["status"].as_str().unwrap_or("")) {
            return v;
        }
        assert!(Instant::now() < deadline, "job {id} did not end: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const MAIN_PY: &str = r#"import os, sys
print("hello from main.py", flush=True)
print("a warning", file=sys.stderr, flush=True)
print("args:", " ".join(sys.argv[1:]), "EXAMPLE=" + os.environ.get("EXAMPLE", ""), flush=True)
with open("result.txt", "w") as f:
    f.write("42\n")
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_job_runners_calls_work_as_its_readme_shows() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let host = s.u("");
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("examples")).unwrap();
    std::fs::write(dir.join("examples/main.py"), MAIN_PY).unwrap();

    // The README's create request, verbatim.
    let url = format!("{host}/jobs");
    let created = curl(
        dir,
        &[
            "-X",
            "POST",
            &url,
            "-F",
            r#"spec={"entry":"main.py","timeout_sec":20}"#,
            "-F",
            "code_files=@examples/main.py",
        ],
    );
    let v: Value = serde_json::from_str(&created).unwrap_or_else(|e| panic!("{e}: {created}"));
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["job_id"], v["id"]);
    assert_eq!(v["status"], "queued");

    // Tail logs (SSE), verbatim: it ends with `event: end`, stdout and stderr told apart.
    let sse = curl(dir, &["-N", &format!("{host}/jobs/{id}/logs/stream")]);
    assert!(
        sse.contains("event: stdout\ndata: hello from main.py\n"),
        "{sse}"
    );
    assert!(sse.contains("event: stderr\ndata: a warning\n"), "{sse}");
    let end = sse
        .rfind("event: end")
        .unwrap_or_else(|| panic!("no end: {sse}"));
    assert!(sse[end..].contains(r#""status":"completed""#), "{sse}");
    assert!(sse[end..].contains(r#""exit_code":0"#), "{sse}");

    // Status + metadata, the full log, the produced file.
    let v = wait_final(&s, &id).await;
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(v["id"], id.as_str());
    let log = curl(dir, &[&format!("{host}/jobs/{id}/logs")]);
    assert!(
        log.contains("hello from main.py") && log.contains("a warning"),
        "{log}"
    );
    let file = curl(dir, &[&format!("{host}/jobs/{id}/artifacts/result.txt")]);
    assert_eq!(file, "42\n");
    let (st, _) = curl_status(dir, &[&format!("{host}/jobs/{id}/artifacts/nothing.txt")]);
    assert_eq!(st, 404);
    // The /v1 door tells the streams apart too.
    let err = curl(dir, &[&format!("{host}/v1/jobs/{id}/logs?stream=stderr")]);
    assert_eq!(err, "a warning\n");
    let out = curl(dir, &[&format!("{host}/v1/jobs/{id}/logs?stream=stdout")]);
    assert!(out.starts_with("hello from main.py\nargs:"), "{out}");

    // The README's whole JobSpec example: args, runtime, net_policy, env.
    let spec = r#"spec={
  "entry": "main.py",
  "args": ["--foo", "bar"],
  "timeout_sec": 60,
  "runtime": "python3.12",
  "net_policy": "none",
  "env": {"EXAMPLE": "1"}
}"#;
    let created = curl(
        dir,
        &[
            "-X",
            "POST",
            &url,
            "-F",
            spec,
            "-F",
            "code_files=@examples/main.py",
        ],
    );
    let id2 = serde_json::from_str::<Value>(&created).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let v = wait_final(&s, &id2).await;
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(
        v["request"]["spec"]["base_image"],
        "python:3.12-slim-bookworm"
    );
    let log = curl(dir, &[&format!("{host}/jobs/{id2}/logs")]);
    assert!(log.contains("args: --foo bar EXAMPLE=1"), "{log}");

    // What is refused, and named: an unknown spec field, an unknown part, an entry not uploaded.
    for (args, want) in [
        (
            vec![
                "-F",
                r#"spec={"entry":"main.py","timeout":20}"#,
                "-F",
                "code_files=@examples/main.py",
            ],
            "timeout",
        ),
        (
            vec![
                "-F",
                r#"spec={"entry":"main.py"}"#,
                "-F",
                "sources=@examples/main.py",
            ],
            "sources",
        ),
        (
            vec![
                "-F",
                r#"spec={"entry":"other.py"}"#,
                "-F",
                "code_files=@examples/main.py",
            ],
            "other.py",
        ),
    ] {
        let mut a = vec!["-X", "POST", url.as_str()];
        a.extend(args);
        let (st, body) = curl_status(dir, &a);
        assert_eq!(st, 400, "{body}");
        assert!(body.contains(want), "{want}: {body}");
    }
}

fn tar_gz(files: &[(&str, &str, u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (name, text, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(*mode);
        h.set_cksum();
        b.append_data(&mut h, name, text.as_bytes()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_job_daemons_workflow_works_upload_status_logs_tarball_cancel_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let host = s.u("");
    let dir = tmp.path();
    // 1. An aggregate file (a tarball) without a spec: its run.sh is the job.
    let run = "echo building\nmkdir -p out && echo result > out/answer.txt\necho done >&2\n";
    std::fs::write(dir.join("job.tar.gz"), tar_gz(&[("run.sh", run, 0o755)])).unwrap();
    let created = curl(
        dir,
        &[
            "-X",
            "POST",
            &format!("{host}/jobs"),
            "-F",
            "file=@job.tar.gz",
        ],
    );
    let id =
        serde_json::from_str::<Value>(&created).unwrap_or_else(|e| panic!("{e}: {created}"))["id"]
            .as_str()
            .unwrap()
            .to_owned();
    // 3. Status and logs.
    let v = wait_final(&s, &id).await;
    assert_eq!(v["status"], "completed", "{v}");
    let st: Value =
        serde_json::from_str(&curl(dir, &[&format!("{host}/jobs/{id}/status")])).unwrap();
    assert_eq!(
        (st["id"].as_str(), st["status"].as_str()),
        (Some(id.as_str()), Some("completed"))
    );
    let log = curl(dir, &[&format!("{host}/jobs/{id}/logs")]);
    assert!(log.contains("building") && log.contains("done"), "{log}");
    // 5. The working directory as a tarball.
    curl(
        dir,
        &[
            "-X",
            "POST",
            &format!("{host}/jobs/{id}/tarball"),
            "-o",
            "out.tar.gz",
        ],
    );
    let bytes = std::fs::read(dir.join("out.tar.gz")).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("code/out/answer.txt")),
        "{names:?}"
    );

    // A set of files (files=, twice), one of them run.sh: a long job, listed, then cancelled.
    std::fs::write(dir.join("run.sh"), "echo started; sleep 60\n").unwrap();
    std::fs::write(dir.join("input.txt"), "x\n").unwrap();
    let created = curl(
        dir,
        &[
            "-X",
            "POST",
            &format!("{host}/jobs"),
            "-F",
            "files=@run.sh",
            "-F",
            "files=@input.txt",
        ],
    );
    let long = serde_json::from_str::<Value>(&created).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    while job(&s, &long).await["status"] != "running" {
        assert!(Instant::now() < deadline, "{}", job(&s, &long).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let list: Value = serde_json::from_str(&curl(dir, &[&format!("{host}/jobs")])).unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["id"].as_str())
        .collect();
    assert!(
        ids.contains(&id.as_str()) && ids.contains(&long.as_str()),
        "{list}"
    );
    // 4. Cancel, then delete.
    let c: Value = serde_json::from_str(&curl(
        dir,
        &["-X", "POST", &format!("{host}/jobs/{long}/cancel")],
    ))
    .unwrap();
    assert_eq!(c["status"], "stopping");
    assert_eq!(wait_final(&s, &long).await["status"], "stopped");
    let (st, _) = curl_status(dir, &["-X", "POST", &format!("{host}/jobs/{long}/cancel")]);
    assert_eq!(st, 409);
    let d: Value = serde_json::from_str(&curl(
        dir,
        &["-X", "DELETE", &format!("{host}/jobs/{long}")],
    ))
    .unwrap();
    assert_eq!(d["status"], "deleted");
    let (st, _) = curl_status(dir, &[&format!("{host}/jobs/{long}")]);
    assert_eq!(st, 404);

    // Files without a spec or a run.sh are refused, and nothing is kept.
    let (st, body) = curl_status(
        dir,
        &[
            "-X",
            "POST",
            &format!("{host}/jobs"),
            "-F",
            "files=@input.txt",
        ],
    );
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("run.sh"), "{body}");
    let list: Value = serde_json::from_str(&curl(dir, &[&format!("{host}/jobs")])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}
