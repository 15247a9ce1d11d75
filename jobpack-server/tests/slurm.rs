//! The Slurm backend through the real scheduler: a one-node cluster (munged, slurmctld, slurmd on
//! loopback, `scripts/slurm-up.sh`) and the real server with `--executor slurm`. Skips, saying
//! why, only where Debian's slurm-wlm and munge are not installed (`scripts/setup.sh --tests`
//! installs them) or the machine is not root.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Launch, Server, is_root, jobpack_in, missing_tool, script};
use serde_json::{Value, json};

/// A running one-node cluster, stopped on drop.
struct Cluster {
    dir: PathBuf,
    conf: String,
}

impl Cluster {
    fn start(dir: &Path) -> Result<Cluster, String> {
        if !is_root() {
            return Err("starting slurmctld and slurmd needs root (CI runs as root)".into());
        }
        if let Some(tool) = missing_tool(&["sbatch", "slurmctld", "slurmd", "munged"]) {
            return Err(format!(
                "{tool} is not installed (scripts/setup.sh --tests installs slurm-wlm and munge)"
            ));
        }
        let out = Command::new(script("slurm-up.sh"))
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the cluster did not start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let conf = String::from_utf8_lossy(&out.stdout)
            .trim()
            .strip_prefix("SLURM_CONF=")
            .unwrap()
            .to_owned();
        Ok(Cluster {
            dir: dir.to_path_buf(),
            conf,
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(script("slurm-down.sh"))
            .arg(&self.dir)
            .status();
    }
}

fn server(data: &Path, shared: &Path, conf: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--auth",
        "none",
        "--executor",
        "slurm",
        "--shared-dir",
        shared.to_str().unwrap(),
        "--max-concurrent",
        "8",
    ];
    args.extend_from_slice(extra);
    Server::launch(
        data,
        Launch {
            args: &args,
            env: &[("SLURM_CONF", conf)],
            capture_stderr: false,
        },
    )
}

async fn log(s: &Server, id: &str) -> String {
    reqwest::get(s.u(&format!("/v1/jobs/{id}/logs")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn submit(s: &Server, body: Value) -> String {
    let (st, v) = common::call(
        &reqwest::Client::new(),
        s,
        "POST",
        "/v1/jobs",
        None,
        Some(&body),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    v["job_id"].as_str().unwrap().to_owned()
}

async fn job(s: &Server, id: &str) -> Value {
    common::call(
        &reqwest::Client::new(),
        s,
        "GET",
        &format!("/v1/jobs/{id}"),
        None,
        None,
    )
    .await
    .1
}

async fn wait_for(s: &Server, id: &str, want: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let j = job(s, id).await;
        if want.contains(&j["status"].as_str().unwrap_or("")) {
            return j;
        }
        assert!(Instant::now() < deadline, "never {want:?}: {j:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn squeue(conf: &str) -> String {
    let out = Command::new("squeue")
        .args(["-h", "-o", "%i %j %T"])
        .env("SLURM_CONF", conf)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_run_through_slurm() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = match Cluster::start(&tmp.path().join("cluster")) {
        Ok(c) => c,
        Err(why) => {
            println!("SKIPPED jobs_run_through_slurm: {why}");
            return;
        }
    };
    let conf = cluster.conf.clone();
    let data = tmp.path().join("data");
    let shared = tmp.path().join("shared");
    let s = server(&data, &shared, &conf, &[]);

    // A job completes, its log streamed (the CLI follows the SSE stream) and the exit code kept.
    let spec = tmp.path().join("hello.yaml");
    std::fs::write(
        &spec,
        "command: \"echo hello; sleep 1; echo from $(hostname) done\"\n",
    )
    .unwrap();
    let env = [("JOBPACK_SERVER", s.url.as_str())];
    let t0 = Instant::now();
    let (code, out, err) = jobpack_in(
        tmp.path(),
        &["submit", spec.to_str().unwrap(), "--follow"],
        &env,
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.starts_with("hello\nfrom ") && out.ends_with(" done\n"),
        "{out}"
    );
    println!(
        "a trivial job through Slurm, submit to end: {:?}",
        t0.elapsed()
    );
    let l: Value = common::call(&reqwest::Client::new(), &s, "GET", "/v1/jobs", None, None)
        .await
        .1;
    let done = &l["jobs"][0];
    assert_eq!(done["status"], "completed");
    let queued = done["outcome"]["queued_secs"]
        .as_f64()
        .expect("queued_secs");
    println!("submit-to-running latency through Slurm: {queued:.3} s");
    assert!(
        done["outcome"]["isolation"]["level"]
            .as_str()
            .unwrap()
            .starts_with("slurm job ")
    );
    // The working directory is in the shared directory, and its tarball is served as usual.
    let id = done["job_id"].as_str().unwrap();
    assert!(shared.join("jobs").join(id).join("work/run.sh").exists());
    let r = reqwest::get(s.u(&format!("/v1/jobs/{id}/tarball")))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Deleting it removes its files in the shared directory too.
    let (st, _) = common::call(
        &reqwest::Client::new(),
        &s,
        "DELETE",
        &format!("/v1/jobs/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(st, 204);
    assert!(!shared.join("jobs").join(id).exists());
    assert!(!shared.join("slurm").join(id).exists());

    // Several at once: a failure, memory and time limits, a cancel.
    let failing = submit(&s, json!({"command": "echo failing; exit 3"})).await;
    let oom = submit(
        &s,
        json!({"command": "python3 -c 'x = bytearray(400 * 1024 * 1024); print(len(x))'",
               "limits": {"memory_bytes": 64u64 << 20}}),
    )
    .await;
    let slow = submit(&s, json!({"command": "sleep 60", "limits": {"timeout": 2}})).await;
    let cancelled = submit(
        &s,
        json!({"command": "trap 'echo got TERM; exit 143' TERM; sleep 300 & wait"}),
    )
    .await;

    let j = wait_for(&s, &failing, &["failed"]).await;
    assert_eq!(j["exit_code"], 3, "{j:#}");
    let j = wait_for(&s, &oom, &["oom_killed", "failed", "completed"]).await;
    assert_eq!(j["status"], "oom_killed", "{j:#}");
    let j = wait_for(&s, &slow, &["timed_out", "failed", "completed"]).await;
    assert_eq!(j["status"], "timed_out", "{j:#}");

    wait_for(&s, &cancelled, &["running"]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (st, v) = common::call(
        &reqwest::Client::new(),
        &s,
        "POST",
        &format!("/v1/jobs/{cancelled}/cancel"),
        None,
        None,
    )
    .await;
    assert_eq!(st, 202, "{v}");
    let j = wait_for(&s, &cancelled, &["stopped", "failed", "completed"]).await;
    assert_eq!(j["status"], "stopped", "{j:#}");
    assert!(
        !squeue(&conf).contains(&format!("jobpack-{cancelled}")),
        "still queued"
    );

    // A server restart re-attaches to a job that is still running.
    let long = submit(
        &s,
        json!({"command": "echo before; sleep 4; echo after-restart"}),
    )
    .await;
    wait_for(&s, &long, &["running"]).await;
    s.kill();
    assert!(
        squeue(&conf).contains(&format!("jobpack-{long}")),
        "the job outlives the server"
    );
    let s = server(&data, &shared, &conf, &[]);
    let j = wait_for(&s, &long, &["completed", "failed"]).await;
    assert_eq!(j["status"], "completed", "{j:#}");
    assert_eq!(log(&s, &long).await, "before\nafter-restart\n");
    drop(s);

    // --slurm-sandbox: on the node, the job runs inside jobpack's own sandbox, on a runtime's
    // root when it names one (the server's store, on this one-node cluster's disk).
    let bin = env!("CARGO_BIN_EXE_jobpack");
    let rootfs = common::marked_debian_rootfs(tmp.path(), "slurm-test");
    if let Ok(r) = &rootfs {
        let store = tmp.path().join("data-sandbox/runtimes");
        let (code, _, err) = common::jobpack_in(
            tmp.path(),
            &["runtime", "import", "py", r.to_str().unwrap()],
            &[("JOBPACK_RUNTIMES", store.to_str().unwrap())],
        );
        assert_eq!(code, 0, "{err}");
    }
    let s = server(
        &tmp.path().join("data-sandbox"),
        &shared,
        &conf,
        &["--slurm-sandbox", bin],
    );
    let id = submit(&s, json!({"command": "id -u; hostname"})).await;
    let j = wait_for(&s, &id, &["completed", "failed"]).await;
    assert_eq!(j["status"], "completed", "{j:#}");
    let text = log(&s, &id).await;
    assert!(
        text.starts_with("1000\njobpack\n"),
        "not in the sandbox: {text}"
    );
    match rootfs {
        Ok(_) => {
            let id = submit(
                &s,
                json!({"runtime_fs": "py", "command": "grep ^VARIANT_ID= /etc/os-release; ls /opt/wheels"}),
            )
            .await;
            let j = wait_for(&s, &id, &["completed", "failed"]).await;
            assert_eq!(j["status"], "completed", "{j:#}");
            let text = log(&s, &id).await;
            assert!(
                text.starts_with("VARIANT_ID=slurm-test\njobpack_hello-1.0-py3-none-any.whl\n"),
                "not on the runtime's root: {text}"
            );
        }
        Err(why) => println!("SKIPPED the Slurm runtime job: {why}"),
    }
    drop(s);

    // Clear errors: a controller that is down, and no Slurm commands at all.
    drop(cluster);
    // `serve` with Slurm, which must refuse to start: its stderr.
    let refused = |data: &str, env: (&str, &str)| {
        let out = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--auth", "none"])
            .args(["--executor", "slurm", "--shared-dir"])
            .arg(&shared)
            .arg("--data-dir")
            .arg(tmp.path().join(data))
            .env(env.0, env.1)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused("data2", ("SLURM_CONF", &conf));
    assert!(
        err.contains("cannot use Slurm") && err.contains("slurmctld running"),
        "{err}"
    );
    let err = refused("data3", ("PATH", "/nonexistent"));
    assert!(err.contains("sinfo is not installed"), "{err}");
}
