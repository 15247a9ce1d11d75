//! Executor benchmark (needs root for the sandbox): `cargo bench -p jobpack-core --bench exec`.
//!
//! 1. Start latency: spawn to first output byte of a trivial job, p50/p99 over 200 runs, in the
//!    full sandbox, next to a plain unsandboxed `sh` spawn as the baseline.
//! 2. Output capture: a job writing 1 GiB to stdout (captured, logged, fanned out) versus the same
//!    job writing 1 GiB to a file in its directory; prints the slowdown ratio.

use std::path::Path;
use std::time::{Duration, Instant};

use jobpack_core::exec::{
    Executor, Limits, LocalExecutor, LocalExecutorConfig, RunRequest, RunStatus,
};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn job(dir: &Path, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    let run = dir.join("run.sh");
    std::fs::write(&run, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
}

async fn timed_run(
    exec: &LocalExecutor,
    dir: &Path,
    log: &Path,
) -> (Duration, Duration, RunStatus) {
    let t0 = Instant::now();
    let mut req = RunRequest::new(dir, log);
    req.limits = Limits {
        timeout: Some(Duration::from_secs(600)),
        memory_bytes: Some(512 << 20),
        pids: Some(256),
        ..Limits::default()
    };
    let h = exec.start(req).await.expect("start");
    let mut r = h.logs().reader();
    let _ = r.next_chunk(1).await.unwrap();
    let first = t0.elapsed();
    let o = h.wait().await;
    (first, t0.elapsed(), o.status)
}

#[tokio::main]
async fn main() {
    // SAFETY: a plain id query.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED exec bench: the sandbox needs root");
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let tmp = tempfile::tempdir().unwrap();
    let exec = LocalExecutor::new(LocalExecutorConfig::default());

    // 1. Start latency.
    let dir = tmp.path().join("trivial");
    job(&dir, "echo x");
    let mut first = Vec::with_capacity(runs);
    for i in 0..runs {
        let (f, _, s) = timed_run(&exec, &dir, &tmp.path().join(format!("t{i}.log"))).await;
        assert_eq!(s, RunStatus::Completed);
        first.push(f);
    }
    first.sort();
    let mut base = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        let mut c = std::process::Command::new("sh")
            .args(["-c", "echo x"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut b = [0u8; 1];
        std::io::Read::read_exact(c.stdout.as_mut().unwrap(), &mut b).unwrap();
        base.push(t0.elapsed());
        c.wait().unwrap();
    }
    base.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "start latency, spawn -> first output byte ({runs} runs): sandbox p50 {:.2} ms, p99 {:.2} ms; \
         plain sh p50 {:.2} ms, p99 {:.2} ms; ratio p50 {:.1}x",
        ms(percentile(&first, 0.5)),
        ms(percentile(&first, 0.99)),
        ms(percentile(&base, 0.5)),
        ms(percentile(&base, 0.99)),
        ms(percentile(&first, 0.5)) / ms(percentile(&base, 0.5)),
    );

    // 2. 1 GiB to stdout vs to a file.
    let mut to_stdout = Vec::new();
    let mut to_file = Vec::new();
    for i in 0..3 {
        let d = tmp.path().join(format!("out{i}"));
        job(&d, "head -c 1073741824 /dev/zero");
        let (_, t, s) = timed_run(&exec, &d, &tmp.path().join(format!("o{i}.log"))).await;
        assert_eq!(s, RunStatus::Completed);
        to_stdout.push(t);
        std::fs::remove_file(tmp.path().join(format!("o{i}.log"))).unwrap();
        let d = tmp.path().join(format!("file{i}"));
        job(&d, "head -c 1073741824 /dev/zero > /job/out.bin");
        let (_, t, s) = timed_run(&exec, &d, &tmp.path().join(format!("f{i}.log"))).await;
        assert_eq!(s, RunStatus::Completed);
        to_file.push(t);
        std::fs::remove_file(d.join("out.bin")).unwrap();
    }
    // Context: the same bytes through a plain shell pipe into a file, unsandboxed.
    let mut pipe = Vec::new();
    for _ in 0..3 {
        let out = tmp.path().join("pipe.out");
        let t0 = Instant::now();
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "head -c 1073741824 /dev/zero | cat > {}",
                out.display()
            ))
            .status()
            .unwrap();
        assert!(st.success());
        pipe.push(t0.elapsed());
        std::fs::remove_file(out).unwrap();
    }
    to_stdout.sort();
    to_file.sort();
    pipe.sort();
    let (a, b, c) = (to_stdout[1], to_file[1], pipe[1]);
    println!(
        "1 GiB output (median of 3): to stdout (captured) {:.2} s = {:.0} MiB/s, to a file {:.2} s; \
         slowdown {:.2}x (plain `head | cat > file` on the host: {:.2} s)",
        a.as_secs_f64(),
        1024.0 / a.as_secs_f64(),
        b.as_secs_f64(),
        a.as_secs_f64() / b.as_secs_f64(),
        c.as_secs_f64()
    );
}
