//! The local sandbox, one test per protection. Each runs a real job in real namespaces and
//! cgroups and fails if its protection is taken away. They need root (CI runs as root); elsewhere
//! each prints why it is skipped.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jobpack_core::exec::{
    ExecError, Executor, IsolationMode, Limits, LocalExecutor, LocalExecutorConfig, NetworkPolicy,
    Outcome, RunRequest, RunStatus,
};
use support::host_procs_with;

fn skip_unless_root(test: &str) -> bool {
    // SAFETY: a plain id query.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED {test}: the sandbox tests need root (CI runs them as root)");
        return true;
    }
    if jobpack_core::exec::cgroup::detect(Path::new("/sys/fs/cgroup")).is_none() {
        println!("SKIPPED {test}: no usable cgroup v1 or v2 under /sys/fs/cgroup");
        return true;
    }
    false
}

struct Job {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    log: PathBuf,
}

fn job(script: &str) -> Job {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("job");
    std::fs::create_dir(&dir).unwrap();
    let run = dir.join("run.sh");
    std::fs::write(&run, format!("#!/bin/bash\n{script}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = tmp.path().join("job.log");
    Job {
        _tmp: tmp,
        dir,
        log,
    }
}

fn executor() -> LocalExecutor {
    LocalExecutor::new(LocalExecutorConfig::default())
}

fn request(j: &Job, limits: Limits) -> RunRequest {
    let mut r = RunRequest::new(&j.dir, &j.log);
    r.limits = limits;
    r
}

async fn run_req(req: RunRequest) -> (Outcome, String) {
    let h = executor().start(req).await.unwrap();
    let o = h.wait().await;
    let log = String::from_utf8_lossy(&h.logs().reader().read_to_end().await.unwrap()).into_owned();
    (o, log)
}

async fn run(script: &str, limits: Limits) -> (Outcome, String) {
    let j = job(script);
    run_req(request(&j, limits)).await
}

/// Runs `python3 prog.py` with `prog` written into the job directory, then `after` in the shell.
async fn run_py(prog: &str, after: &str, limits: Limits) -> (Outcome, String) {
    let j = job(&format!("python3 prog.py\n{after}"));
    std::fs::write(j.dir.join("prog.py"), prog).unwrap();
    run_req(request(&j, limits)).await
}

fn timeout(secs: u64) -> Limits {
    Limits {
        timeout: Some(Duration::from_secs(secs)),
        ..Limits::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_runs_and_reports_what_isolated_it() {
    if skip_unless_root("a_job_runs_and_reports_what_isolated_it") {
        return;
    }
    let (o, log) = run(
        "echo hello; echo to-stderr >&2; id -u; hostname",
        timeout(30),
    )
    .await;
    assert_eq!(o.status, RunStatus::Completed, "{o:?}\n{log}");
    assert_eq!(o.exit_code, Some(0));
    assert!(
        log.contains("hello\n") && log.contains("to-stderr\n"),
        "{log}"
    );
    assert!(log.contains("\n1000\n"), "runs as uid 1000 inside: {log}");
    assert!(log.contains("jobpack"), "own hostname: {log}");
    let iso = &o.isolation;
    assert_eq!(iso.level, "namespaces");
    for ns in ["user", "pid", "mount", "ipc", "uts", "cgroup", "net"] {
        assert!(
            iso.namespaces.iter().any(|n| n == ns),
            "{ns} missing: {iso:?}"
        );
    }
    assert!(iso.seccomp && iso.no_new_privs && iso.capabilities_dropped);
    assert!(iso.cgroup == "v1" || iso.cgroup == "v2", "{iso:?}");
    assert!(
        o.cpu_time_secs.is_some() && o.peak_memory_bytes.is_some(),
        "{o:?}"
    );
}

/// pid 1 builds the root while the server moves it into the job's cgroup; the cgroup namespace
/// must still be entered after the move, so every hierarchy shows the job at its root.
#[tokio::test(flavor = "multi_thread")]
async fn the_job_starts_in_its_cgroup_at_the_root_of_its_cgroup_namespace() {
    if skip_unless_root("the_job_starts_in_its_cgroup_at_the_root_of_its_cgroup_namespace") {
        return;
    }
    for _ in 0..5 {
        let (o, log) = run("cat /proc/self/cgroup", timeout(30)).await;
        assert_eq!(o.status, RunStatus::Completed, "{o:?}\n{log}");
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(':')).collect();
        assert!(!lines.is_empty(), "{log}");
        for l in lines {
            assert!(
                l.ends_with(":/"),
                "not at its namespace's root: {l:?} in\n{log}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_job_reports_its_exit_code() {
    if skip_unless_root("a_failing_job_reports_its_exit_code") {
        return;
    }
    let (o, _) = run("exit 3", timeout(30)).await;
    assert_eq!((o.status, o.exit_code), (RunStatus::Failed, Some(3)));
    assert_eq!(o.reason.as_deref(), Some("exited with status 3"));
}

/// A job starts with no standard signal ignored, whatever the process that started it ignores
/// (this test's, like any Rust program's, ignores SIGPIPE): `yes` ends quietly at a closed pipe.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_starts_with_default_signal_dispositions() {
    if skip_unless_root("a_job_starts_with_default_signal_dispositions") {
        return;
    }
    let (o, log) = run(
        "yes | head -1; grep '^SigIgn' /proc/self/status",
        timeout(30),
    )
    .await;
    assert_eq!(o.exit_code, Some(0), "{log}");
    let ignored = log
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
        .unwrap_or_else(|| panic!("{log}"));
    // Real-time signals (32 and up) are libc's own business.
    assert_eq!(ignored & 0x7fff_ffff, 0, "{log}");
    assert!(
        log.starts_with("y\n") && !log.contains("Broken pipe"),
        "{log}"
    );
}

/// A `#!/usr/bin/env bash` script (every artifact's run.sh) runs as env(1) would run it: bash
/// from the job's PATH, with `$0`, the arguments and the command line env gives it; a script that
/// may not be executed still fails as the kernel fails it.
#[tokio::test(flavor = "multi_thread")]
async fn an_env_bash_script_runs_as_env_would_run_it() {
    if skip_unless_root("an_env_bash_script_runs_as_env_would_run_it") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let j = job("");
    let run = j.dir.join("run.sh");
    let body = "#!/usr/bin/env bash\n\
                echo \"$0|$#|$1|$2|${BASH_VERSION:+bash}\"\n\
                tr '\\0' ' ' < /proc/$$/cmdline; echo\n";
    std::fs::write(&run, body).unwrap();
    for path in [None, Some("/nonexistent:/usr/local/bin:/usr/bin:/bin")] {
        let mut req = request(&j, timeout(30));
        req.argv = vec!["./run.sh".into(), "one".into(), "two words".into()];
        if let Some(p) = path {
            req.env.insert("PATH".into(), p.into());
        }
        let (o, log) = run_req(req).await;
        assert_eq!(o.exit_code, Some(0), "{log}");
        assert_eq!(
            log, "./run.sh|2|one|two words|bash\nbash ./run.sh one two words \n",
            "PATH {path:?}"
        );
    }
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = executor().start(request(&j, timeout(30))).await.err();
    let e = e.map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("Permission denied"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn network_none_cannot_reach_a_host_port() {
    if skip_unless_root("network_none_cannot_reach_a_host_port") {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let script = format!(
        "if (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null; then echo CONNECTED; else echo REFUSED; fi\n\
         ip -o link 2>/dev/null | cut -d: -f2 || cat /proc/net/dev"
    );
    let (o, log) = run(&script, timeout(30)).await;
    assert_eq!(o.status, RunStatus::Completed, "{log}");
    assert!(log.contains("REFUSED"), "{log}");
    assert!(
        listener.accept().is_err(),
        "the job reached the host's listener"
    );
    assert!(
        !log.contains("eth") && !log.contains("ens"),
        "only loopback inside: {log}"
    );

    // The same job with the host network connects: the check above can fail.
    let j = job(&script);
    let mut req = request(&j, timeout(30));
    req.network = NetworkPolicy::Host;
    let (_, log) = run_req(req).await;
    assert!(log.contains("CONNECTED"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_job_cannot_read_or_write_outside_its_directory() {
    if skip_unless_root("the_job_cannot_read_or_write_outside_its_directory") {
        return;
    }
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "TOP-SECRET-CONTENT\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(outside.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o666)).unwrap();
    let s = secret.display();
    let script = format!(
        "cat {s} 2>&1; cat /proc/1/root{s} 2>&1; echo overwrite > {s} 2>&1 || echo WRITE-REFUSED;\n\
         touch /outside-file 2>&1 || echo ROOT-READONLY; touch /etc/jobpack-x 2>&1 || echo ETC-READONLY;\n\
         echo inside > /job/out.txt && echo JOB-WRITABLE; echo t > /tmp/t && echo TMP-WRITABLE"
    );
    let j = job(&script);
    let (o, log) = run_req(request(&j, timeout(30))).await;
    assert_eq!(o.status, RunStatus::Completed, "{log}");
    assert!(
        !log.contains("TOP-SECRET-CONTENT"),
        "read a host file: {log}"
    );
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "TOP-SECRET-CONTENT\n"
    );
    for word in [
        "ROOT-READONLY",
        "ETC-READONLY",
        "JOB-WRITABLE",
        "TMP-WRITABLE",
    ] {
        assert!(log.contains(word), "{word}: {log}");
    }
    assert_eq!(
        std::fs::read_to_string(j.dir.join("out.txt")).unwrap(),
        "inside\n"
    );
    assert!(!Path::new("/outside-file").exists() && !Path::new("/etc/jobpack-x").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn writing_to_usr_fails() {
    if skip_unless_root("writing_to_usr_fails") {
        return;
    }
    let (o, log) = run(
        "touch /usr/jobpack-probe 2>&1; echo x > /usr/bin/jobpack-probe 2>&1; true",
        timeout(30),
    )
    .await;
    assert_eq!(o.status, RunStatus::Completed);
    assert!(log.contains("Read-only file system"), "{log}");
    assert!(!Path::new("/usr/jobpack-probe").exists());
    assert!(!Path::new("/usr/bin/jobpack-probe").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_job_sees_only_its_own_processes() {
    if skip_unless_root("the_job_sees_only_its_own_processes") {
        return;
    }
    let me = std::process::id();
    let script = format!(
        "ps ax -o pid=,comm=; echo COUNT $(ls /proc | grep -c '^[0-9]'); \
         kill -9 {me} 2>&1 || echo KILL-REFUSED"
    );
    let (o, log) = run(&script, timeout(30)).await;
    assert_eq!(o.status, RunStatus::Completed, "{log}");
    let count: usize = log
        .lines()
        .find_map(|l| l.strip_prefix("COUNT "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // pid 1 (the sandbox's init), the job's shell, and the short-lived ls/grep/ps.
    assert!(count <= 5, "saw {count} processes: {log}");
    let pids: Vec<u32> = log
        .lines()
        .take_while(|l| !l.starts_with("COUNT"))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(pids.iter().all(|p| *p < 10), "host pids visible: {log}");
    assert!(
        log.contains("KILL-REFUSED") || log.contains("No such process"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_new_privs_no_capabilities_and_seccomp() {
    if skip_unless_root("no_new_privs_no_capabilities_and_seccomp") {
        return;
    }
    let (o, log) = run_py(
        r#"import ctypes, os, platform
libc = ctypes.CDLL(None, use_errno=True)
nr = {"x86_64": (250, 321), "aarch64": (219, 280)}.get(platform.machine())
if nr:
    for name, n in zip(("keyctl", "bpf"), nr):
        r = libc.syscall(n, 0, 0, 0, 0, 0)
        print(name, r, os.strerror(ctypes.get_errno()))
# clone3 (435 on both), and x86_64's x32 numbers (getpid's, with the x32 bit).
r = libc.syscall(435, 0, 0)
print("clone3", r, os.strerror(ctypes.get_errno()))
if platform.machine() == "x86_64":
    r = libc.syscall(0x40000000 | 39)
    print("x32", r, os.strerror(ctypes.get_errno()))
pid = os.fork()
if pid == 0:
    os._exit(7)
print("fork", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"#,
        "grep -E '^(NoNewPrivs|CapEff|CapPrm|CapBnd|Seccomp):' /proc/self/status; \
         unshare -U true 2>&1; unshare -n true 2>&1; true",
        timeout(30),
    )
    .await;
    assert_eq!(o.status, RunStatus::Completed, "{log}");
    assert!(log.contains("NoNewPrivs:\t1"), "{log}");
    assert!(log.contains("CapEff:\t0000000000000000"), "{log}");
    assert!(log.contains("CapPrm:\t0000000000000000"), "{log}");
    assert!(log.contains("CapBnd:\t0000000000000000"), "{log}");
    assert!(log.contains("Seccomp:\t2"), "{log}");
    // A plain clone (fork) is allowed; one with a namespace flag is not (unshare above).
    assert!(log.contains("fork 7"), "{log}");
    assert!(
        log.contains("unshare failed: Operation not permitted"),
        "{log}"
    );
    if std::env::consts::ARCH == "x86_64" || std::env::consts::ARCH == "aarch64" {
        assert!(log.contains("keyctl -1 Operation not permitted"), "{log}");
        assert!(log.contains("bpf -1 Operation not permitted"), "{log}");
        assert!(log.contains("clone3 -1 Function not implemented"), "{log}");
    }
    if std::env::consts::ARCH == "x86_64" {
        assert!(log.contains("x32 -1 Function not implemented"), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_over_the_limit_is_oom_killed() {
    if skip_unless_root("memory_over_the_limit_is_oom_killed") {
        return;
    }
    let limits = Limits {
        memory_bytes: Some(64 << 20),
        ..timeout(60)
    };
    let (o, log) = run(
        "python3 -c 'b = bytearray(b\"x\") * (200 << 20); print(\"ALLOCATED\", len(b))'",
        limits,
    )
    .await;
    assert_eq!(o.status, RunStatus::OomKilled, "{o:?}\n{log}");
    assert!(!log.contains("ALLOCATED 209715200"), "{log}");
    assert!(o.isolation.cgroup_limits.iter().any(|l| l == "memory"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_bomb_is_contained() {
    if skip_unless_root("a_fork_bomb_is_contained") {
        return;
    }
    let limits = Limits {
        pids: Some(20),
        ..timeout(60)
    };
    let started = Instant::now();
    let (o, log) = run_py(
        r#"import os, time
n = 0
while True:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(600)
        os._exit(0)
    n += 1
print("FORKS", n, flush=True)
"#,
        "b() { b | b & }; b; sleep 1; echo BOMB-DONE",
        limits,
    )
    .await;
    let forks: u32 = log
        .lines()
        .find_map(|l| l.strip_prefix("FORKS "))
        .unwrap_or_else(|| panic!("{log}"))
        .trim()
        .parse()
        .unwrap();
    assert!(forks < 20, "{forks} forks under a limit of 20: {log}");
    assert_ne!(o.status, RunStatus::TimedOut, "{o:?}");
    assert!(
        o.reason.as_ref().is_none_or(|r| !r.contains("cleanup")),
        "{o:?}"
    );
    // Every process of the job is gone, although the children slept for 10 minutes.
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cpu_limit_of_half_a_core_gives_about_half_a_core() {
    if skip_unless_root("a_cpu_limit_of_half_a_core_gives_about_half_a_core") {
        return;
    }
    let limits = Limits {
        cpu_percent: Some(50),
        ..timeout(60)
    };
    let (o, log) = run(
        "python3 -c 'import time\nt = time.time()\nwhile time.time() - t < 3: pass'",
        limits,
    )
    .await;
    assert_eq!(o.status, RunStatus::Completed, "{log}");
    let cpu = o.cpu_time_secs.unwrap();
    // 3 s of wall-clock spinning under a 50% quota: about 1.5 CPU-seconds (unlimited: ~3).
    assert!(
        (0.9..=2.0).contains(&cpu),
        "cpu {cpu}s for a 3 s spin at 50%: {o:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_past_its_timeout_is_timed_out() {
    if skip_unless_root("a_job_past_its_timeout_is_timed_out") {
        return;
    }
    let limits = Limits {
        timeout: Some(Duration::from_millis(500)),
        ..Limits::default()
    };
    let (o, log) = run("echo started; sleep 30; echo NOT-REACHED", limits).await;
    assert_eq!(o.status, RunStatus::TimedOut, "{o:?}");
    assert!(log.contains("started") && !log.contains("NOT-REACHED"));
    assert!(o.wall_time_secs < 20.0, "{o:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_kills_a_job_that_traps_sigterm_after_the_grace() {
    if skip_unless_root("cancel_kills_a_job_that_traps_sigterm_after_the_grace") {
        return;
    }
    let j = job("trap 'echo GOT-TERM' TERM; echo READY; while true; do sleep 0.1; done");
    let h = executor().start(request(&j, timeout(120))).await.unwrap();
    let mut r = h.logs().reader();
    let first = r.next_chunk(100).await.unwrap().unwrap();
    assert_eq!(first, b"READY\n");
    let t = Instant::now();
    h.cancel(Duration::from_millis(700));
    let o = h.wait().await;
    assert_eq!(o.status, RunStatus::Stopped, "{o:?}");
    assert_eq!(o.signal, Some(libc::SIGKILL), "{o:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "killed before the grace ended"
    );
    let log = String::from_utf8(r.read_to_end().await.unwrap()).unwrap();
    assert!(log.contains("GOT-TERM"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_setsid_daemon_is_gone_after_cancel_and_the_cgroup_removed() {
    if skip_unless_root("a_setsid_daemon_is_gone_after_cancel_and_the_cgroup_removed") {
        return;
    }
    let j = job("setsid sleep 313.25 < /dev/null > /dev/null 2>&1 & echo READY; sleep 300");
    let h = executor().start(request(&j, timeout(120))).await.unwrap();
    let mut r = h.logs().reader();
    assert_eq!(r.next_chunk(100).await.unwrap().unwrap(), b"READY\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while host_procs_with("313.25").is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !host_procs_with("313.25").is_empty(),
        "the daemon never started"
    );
    h.cancel(Duration::from_millis(200));
    let o = h.wait().await;
    assert_eq!(o.status, RunStatus::Stopped);
    assert_eq!(
        host_procs_with("313.25"),
        Vec::<u32>::new(),
        "the daemon survived"
    );
    assert!(!o.isolation.cgroup_paths.is_empty());
    for p in &o.isolation.cgroup_paths {
        assert!(!Path::new(p).exists(), "cgroup {p} not removed");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_megabytes_of_output_arrive_complete_and_in_order() {
    if skip_unless_root("a_hundred_megabytes_of_output_arrive_complete_and_in_order") {
        return;
    }
    // seq 1..12.5M is 100.9 MB; half of it on stderr would reorder, so stdout only.
    let n = 12_500_000u64;
    let j = job(&format!("seq 1 {n}"));
    let h = executor().start(request(&j, timeout(300))).await.unwrap();
    // A live reader from the start, concurrently with the job.
    let mut live = h.logs().reader();
    let reader = tokio::spawn(async move {
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        let mut len = 0u64;
        while let Some(c) = live.next_chunk(1 << 20).await.unwrap() {
            len += c.len() as u64;
            sha2::Digest::update(&mut hasher, &c);
        }
        (len, hex::encode(sha2::Digest::finalize(hasher)))
    });
    let o = h.wait().await;
    assert_eq!(o.status, RunStatus::Completed, "{o:?}");
    let mut expected = <sha2::Sha256 as sha2::Digest>::new();
    let mut elen = 0u64;
    let mut line = String::new();
    for i in 1..=n {
        line.clear();
        line.push_str(&i.to_string());
        line.push('\n');
        elen += line.len() as u64;
        sha2::Digest::update(&mut expected, line.as_bytes());
    }
    let expected = hex::encode(sha2::Digest::finalize(expected));
    assert!(elen > 100_000_000);
    assert_eq!(o.log_bytes, elen);
    assert_eq!(reader.await.unwrap(), (elen, expected.clone()));
    // A reader that joins after the end gets the same bytes.
    let file = std::fs::read(&j.log).unwrap();
    assert_eq!(
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&file)),
        expected
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_reader_gets_the_whole_history_then_live_data() {
    if skip_unless_root("a_late_reader_gets_the_whole_history_then_live_data") {
        return;
    }
    let j = job("echo one; echo two; sleep 1; echo three; sleep 0.3; echo four");
    let h = executor().start(request(&j, timeout(60))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = h.logs().reader().read_to_end().await.unwrap();
    assert_eq!(String::from_utf8(late).unwrap(), "one\ntwo\nthree\nfour\n");
    h.wait().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_masked_also_when_split_across_writes() {
    if skip_unless_root("secrets_are_masked_also_when_split_across_writes") {
        return;
    }
    let j = job(
        "printf 'a=s3cr'; sleep 0.3; printf 'et-v4lue\\n'; echo \"b=$TOKEN\"; \
         echo \"$TOKEN\" >&2; echo s3cr3t-not",
    );
    let mut req = request(&j, timeout(30));
    req.secret_env = BTreeMap::from([("TOKEN".to_owned(), "s3cret-v4lue".to_owned())]);
    let (o, log) = run_req(req).await;
    assert_eq!(o.status, RunStatus::Completed);
    assert!(!log.contains("s3cret-v4lue"), "{log}");
    assert!(
        log.contains("a=***\n") && log.contains("b=***\n") && log.contains("s3cr3t-not"),
        "{log:?}"
    );
    assert!(!std::fs::read_to_string(&j.log).unwrap().contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_log_cap_stops_the_job() {
    if skip_unless_root("the_log_cap_stops_the_job") {
        return;
    }
    let limits = Limits {
        log_bytes: Some(1 << 20),
        ..timeout(60)
    };
    let (o, log) = run("yes spam", limits).await;
    assert_eq!(o.status, RunStatus::LimitExceeded, "{o:?}");
    assert_eq!(log.len(), 1 << 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_namespaces_strict_refuses_and_permissive_reports_none() {
    let j = job("echo fallback; exit 4");
    let cfg = LocalExecutorConfig {
        namespaces: false,
        ..LocalExecutorConfig::default()
    };
    let err = match LocalExecutor::new(cfg.clone())
        .start(request(&j, timeout(30)))
        .await
    {
        Err(e) => e,
        Ok(_) => panic!("strict mode ran a job without isolation"),
    };
    assert!(
        matches!(err, ExecError::IsolationUnavailable { .. }),
        "{err}"
    );

    let cfg = LocalExecutorConfig {
        mode: IsolationMode::Permissive,
        ..cfg
    };
    let limits = Limits {
        memory_bytes: Some(1 << 30),
        ..timeout(30)
    };
    let h = LocalExecutor::new(cfg)
        .start(request(&j, limits))
        .await
        .unwrap();
    let o = h.wait().await;
    assert_eq!((o.status, o.exit_code), (RunStatus::Failed, Some(4)));
    assert_eq!(o.isolation.level, "none");
    assert!(
        o.isolation
            .missing
            .iter()
            .any(|m| m.contains("not enforced")),
        "{o:?}"
    );
    let log = h.logs().reader().read_to_end().await.unwrap();
    assert_eq!(log, b"fallback\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_refused_before_anything_runs() {
    let j = job("true");
    let mut req = request(&j, Limits::default());
    req.env.insert("BAD-NAME".into(), "x".into());
    let err = executor().start(req).await.err().unwrap();
    assert!(err.to_string().contains("BAD-NAME"), "{err}");
    let req = RunRequest::new("/nonexistent/job", j.log.clone());
    let err = executor().start(req).await.err().unwrap();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mounts_show_other_directories_read_only_inside_the_job() {
    if skip_unless_root("mounts_show_other_directories_read_only_inside_the_job") {
        return;
    }
    let dep = tempfile::tempdir().unwrap();
    std::fs::write(dep.path().join("out.txt"), "from setup\n").unwrap();
    let j = job(
        "cat deps/setup/out.txt; if echo x > deps/setup/new.txt; then echo WROTE; fi; \
         echo mine > own.txt && echo own-ok",
    );
    let mut req = request(&j, timeout(30));
    req.mounts.push(jobpack_core::exec::Mount {
        source: dep.path().to_path_buf(),
        target: "deps/setup".into(),
        read_only: true,
    });
    let (o, log) = run_req(req).await;
    assert_eq!(o.status, RunStatus::Completed, "{o:?}\n{log}");
    assert!(log.contains("from setup\n"), "{log}");
    assert!(
        !log.contains("WROTE"),
        "a read-only mount was written: {log}"
    );
    assert!(
        log.contains("own-ok"),
        "the job directory stays writable: {log}"
    );
    assert!(!dep.path().join("new.txt").exists());

    // A job directory whose `deps` is a symlink cannot redirect the mount point.
    let j = job("true");
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), j.dir.join("deps")).unwrap();
    let mut req = request(&j, timeout(30));
    req.mounts.push(jobpack_core::exec::Mount {
        source: dep.path().to_path_buf(),
        target: "deps/setup".into(),
        read_only: true,
    });
    let err = executor().start(req).await.err().expect("refused");
    assert!(matches!(err, ExecError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("symlink"), "{err}");
    assert!(!elsewhere.path().join("setup").exists());
}

/// A shared working directory appears at its own path, writable; a link planted under the
/// allowed root leads nowhere (the run fails, nothing outside is touched).
#[tokio::test(flavor = "multi_thread")]
async fn shared_directories_appear_at_their_own_path_and_links_in_them_lead_nowhere() {
    if skip_unless_root(
        "shared_directories_appear_at_their_own_path_and_links_in_them_lead_nowhere",
    ) {
        return;
    }
    use jobpack_core::exec::SharedDir;
    use std::os::unix::fs::chown;
    // Not under /tmp: the sandbox has a fresh /tmp of its own.
    let root = tempfile::tempdir_in("/var/tmp").unwrap();
    let project = root.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("Makefile"), "all:\n").unwrap();
    // Writable by the job's host uid, as an admin would set it up.
    chown(&project, Some(2_000_000), Some(2_000_000)).unwrap();
    let p = project.display();
    let j = job(&format!(
        "cd {p} && ls && echo built > result.txt && pwd && touch /job/ok"
    ));
    let mut req = request(&j, timeout(30));
    req.shared_dirs.push(SharedDir {
        root: root.path().to_path_buf(),
        rel: "project".into(),
    });
    let (o, log) = run_req(req).await;
    assert_eq!(o.status, RunStatus::Completed, "{o:?}\n{log}");
    assert!(
        log.contains("Makefile") && log.contains(&p.to_string()),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(project.join("result.txt")).unwrap(),
        "built\n"
    );

    // A symlink under the allowed root (say another job made it) is refused at the mount.
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
    let j = job("echo x > here.txt");
    let mut req = request(&j, timeout(30));
    req.shared_dirs.push(SharedDir {
        root: root.path().to_path_buf(),
        rel: "escape".into(),
    });
    let refused = match executor().start(req).await {
        Err(e) => e.to_string(),
        Ok(h) => format!("{:?}", h.wait().await),
    };
    assert!(
        refused.contains("escape")
            || refused.contains("ELOOP")
            || refused.contains("symbolic")
            || refused.contains("Too many"),
        "{refused}"
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);

    // Under a directory that is the sandbox's own: refused before anything runs.
    let j = job("true");
    let mut req = request(&j, timeout(30));
    req.shared_dirs.push(SharedDir {
        root: "/tmp".into(),
        rel: ".".into(),
    });
    let err = executor().start(req).await.err().expect("refused");
    assert!(err.to_string().contains("outside /usr"), "{err}");
}

/// A job pinned to one CPU runs on it alone: its cpuset says so, and two busy loops share that
/// one core (their CPU time stays about the wall time, not twice it).
#[tokio::test(flavor = "multi_thread")]
async fn a_job_pinned_to_one_core_uses_one_core() {
    if skip_unless_root("a_job_pinned_to_one_core_uses_one_core") {
        return;
    }
    let limits = Limits {
        cpu_cores: Some("0".into()),
        timeout: Some(Duration::from_secs(30)),
        ..Limits::default()
    };
    let (o, log) = run(
        "grep Cpus_allowed_list /proc/self/status\n\
         for i in 1 2; do timeout 1.5 sh -c 'while :; do :; done' & done; wait",
        limits,
    )
    .await;
    assert_eq!(o.status, RunStatus::Completed, "{o:?}\n{log}");
    assert!(log.contains("Cpus_allowed_list:\t0\n"), "{log}");
    assert!(
        o.isolation.cgroup_limits.contains(&"cpuset".to_owned()),
        "{:?}",
        o.isolation
    );
    let cpu = o.cpu_time_secs.unwrap();
    assert!(
        cpu < 1.5 * 1.35,
        "two busy loops on one core used {cpu:.2} s of CPU in 1.5 s"
    );
    println!("cpu time of two busy loops pinned to core 0 for 1.5 s: {cpu:.2} s");
    // A CPU the machine does not have is refused before anything runs.
    let bad = Limits {
        cpu_cores: Some("4000".into()),
        ..Limits::default()
    };
    let j = job("true");
    assert!(executor().start(request(&j, bad)).await.is_err());
}

/// Runs share one skeleton root (made once, not per run) that no job can change, and leave
/// nothing of their own in the runtime directory.
#[tokio::test(flavor = "multi_thread")]
async fn runs_share_one_read_only_skeleton_and_leave_nothing_behind() {
    if skip_unless_root("runs_share_one_read_only_skeleton_and_leave_nothing_behind") {
        return;
    }
    let runtime = tempfile::tempdir().unwrap();
    let exec = LocalExecutor::new(LocalExecutorConfig {
        runtime_dir: runtime.path().to_path_buf(),
        ..LocalExecutorConfig::default()
    });
    let listing = |p: &Path| {
        let mut v: Vec<String> = walk(p);
        v.sort();
        v
    };
    fn walk(p: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(p).unwrap() {
            let e = e.unwrap();
            out.push(e.path().display().to_string());
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            }
        }
        out
    }
    let mut before = None;
    for i in 0..3 {
        let j = job(&format!(
            "touch /new-{i} 2>&1; mkdir /dev/x 2>&1; rmdir /proc 2>&1; echo run {i}"
        ));
        let h = exec.start(request(&j, timeout(30))).await.unwrap();
        let o = h.wait().await;
        let log =
            String::from_utf8_lossy(&h.logs().reader().read_to_end().await.unwrap()).into_owned();
        assert_eq!(o.status, RunStatus::Completed, "{o:?}\n{log}");
        assert!(log.contains(&format!("run {i}")), "{log}");
        assert_eq!(log.matches("Read-only file system").count(), 3, "{log}");
        // One skeleton, the same after every run: no run adds to it or leaves a directory.
        let top: Vec<_> = std::fs::read_dir(runtime.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(top, [".skeletons"], "{top:?}");
        let skeletons: Vec<_> = std::fs::read_dir(runtime.path().join(".skeletons"))
            .unwrap()
            .collect();
        assert_eq!(skeletons.len(), 1);
        let now = listing(runtime.path());
        assert!(now.iter().any(|p| p.ends_with("/dev/null")), "{now:?}");
        if let Some(b) = &before {
            assert_eq!(b, &now);
        }
        before = Some(now);
    }
}

/// A program that cannot be executed is an error of the start, with the exec's reason (the
/// job's process reports its failed exec to pid 1 before anything is said to be running).
#[tokio::test(flavor = "multi_thread")]
async fn a_program_that_cannot_be_executed_is_an_error_with_its_reason() {
    if skip_unless_root("a_program_that_cannot_be_executed_is_an_error_with_its_reason") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let j = job("echo never");
    std::fs::set_permissions(j.dir.join("run.sh"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = match executor().start(request(&j, timeout(30))).await {
        Err(e) => e.to_string(),
        Ok(h) => panic!("started: {:?}", h.wait().await),
    };
    assert!(
        err.contains("exec") && err.contains("Permission denied"),
        "{err}"
    );
    // The next job runs as usual (pid 1's exec pipe and the shared stack left nothing behind).
    let (o, log) = run("echo fine", timeout(30)).await;
    assert_eq!(o.status, RunStatus::Completed, "{o:?}");
    assert_eq!(log, "fine\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_job_can_be_sampled_and_not_once_it_ended() {
    if skip_unless_root("a_running_job_can_be_sampled_and_not_once_it_ended") {
        return;
    }
    // 80 MB held, three extra processes, a CPU spin: what the samples must see.
    let j = job("sleep 30 & sleep 30 & sleep 30 &\n\
         python3 -c 'import time\nb = bytearray(80 << 20)\nt = time.time()\nwhile time.time() - t < 4: pass'\n\
         kill %1 %2 %3");
    let h = executor().start(request(&j, timeout(60))).await.unwrap();
    let mut seen = Vec::new();
    let wait = h.wait();
    tokio::pin!(wait);
    let o = loop {
        tokio::select! {
            o = &mut wait => break o,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                seen.push(h.sample().expect("a running sandboxed job has a cgroup to read"));
            }
        }
    };
    assert_eq!(o.status, RunStatus::Completed, "{o:?}");
    let most = |f: fn(&jobpack_core::exec::UsageSample) -> Option<u64>| {
        seen.iter().filter_map(f).max().unwrap_or(0)
    };
    assert!(most(|s| s.memory_bytes) >= 80 << 20, "{seen:#?}");
    assert!(
        most(|s| s.pids) >= 5,
        "bash, three sleeps, python: {seen:#?}"
    );
    let cpu: Vec<u64> = seen.iter().map(|s| s.cpu_nanos).collect();
    assert!(
        cpu.windows(2).all(|w| w[0] <= w[1]),
        "CPU time only grows: {cpu:?}"
    );
    assert!(
        cpu.last().unwrap() - cpu[0] >= 1_000_000_000,
        "a 4 s spin: {cpu:?}"
    );
    assert_eq!(h.sample(), None, "the cgroup is gone with the run");
}
