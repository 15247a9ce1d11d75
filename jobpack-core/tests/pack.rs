//! The packing pipeline end to end: a real git daemon and a real HTTP server on 127.0.0.1.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jobpack_core::{Error, JobSpec, Manifest, Packager, PackagerConfig};
use jobpack_core::{FetchError, GitError};
use sha2::{Digest, Sha256};
use support::*;

struct Env {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    work: std::path::PathBuf,
    out: std::path::PathBuf,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let work = root.join("work");
    let out = root.join("out");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    Env {
        _tmp: tmp,
        root,
        work,
        out,
    }
}

fn config(e: &Env) -> PackagerConfig {
    let mut c = PackagerConfig {
        work_dir: e.work.clone(),
        out_dir: e.out.clone(),
        source_date_epoch: None,
        git_timeout: Duration::from_secs(10),
        ..PackagerConfig::default()
    };
    c.download.idle_timeout = Duration::from_secs(5);
    c.download.backoff = Duration::from_millis(50);
    c
}

fn spec(json: serde_json::Value) -> JobSpec {
    serde_json::from_value(json).unwrap()
}

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn assert_no_leftovers(e: &Env) {
    assert_eq!(
        list_tree(&e.work),
        Vec::<String>::new(),
        "staging left behind"
    );
    let out: Vec<_> = list_tree(&e.out)
        .into_iter()
        .filter(|p| p.contains(".jobpack-"))
        .collect();
    assert_eq!(out, Vec::<String>::new(), "temporary artifact left behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn packs_an_older_commit_with_a_shallow_fetch() {
    let e = env();
    let repos = e.root.join("repos");
    let fx = fixture_repo(&repos, "app", true);
    let daemon = GitDaemon::start(&repos);
    let data = DataServer::start().await;
    let csv = b"a,b\n1,2\n".to_vec();
    let data_url = data.route("/hw_200.csv", Route::Bytes(Arc::new(csv.clone())));

    let packager = Packager::new(config(&e)).unwrap();
    let s = spec(serde_json::json!({
        "git_url": daemon.url("app.git"),
        "commit_hash": fx.commits[0],
        "data_url": data_url,
        "command": "cat hello.txt && cat \"$JOBPACK_DATA_DIR/hw_200.csv\" && ./run.py",
    }));
    let art = packager.pack(&s).await.unwrap();
    assert!(
        art.shallow_fetch,
        "the daemon allows SHA wants: expected a depth-1 fetch"
    );
    assert_eq!(art.commit.as_deref(), Some(fx.commits[0].as_str()));
    assert_eq!(art.sha256, sha256(&std::fs::read(&art.path).unwrap()));
    assert_eq!(art.size, std::fs::metadata(&art.path).unwrap().len());

    let x = e.root.join("x");
    extract(&art.path, &x);
    let tree = list_tree(&x);
    assert_eq!(
        tree,
        [
            "Dockerfile",
            "code/",
            "code/hello.txt",
            "code/link-to-deep",
            "code/run.py",
            "code/src/",
            "code/src/nested/",
            "code/src/nested/deep.txt",
            "data/",
            "data/hw_200.csv",
            "jobpack.json",
            "run.sh",
        ]
    );
    assert!(!tree.iter().any(|p| p.contains(".git")));
    assert_eq!(
        std::fs::read_to_string(x.join("code/hello.txt")).unwrap(),
        "hello from commit 0\n"
    );
    let mode = |p: &str| std::fs::metadata(x.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("code/run.py"), 0o755);
    assert_eq!(mode("code/hello.txt"), 0o644);
    assert_eq!(mode("run.sh"), 0o755);
    assert_eq!(
        std::fs::read_link(x.join("code/link-to-deep")).unwrap(),
        Path::new("src/nested/deep.txt")
    );

    // The manifest matches what is in the archive.
    let m: Manifest =
        serde_json::from_slice(&std::fs::read(x.join("jobpack.json")).unwrap()).unwrap();
    assert_eq!(m, art.manifest);
    let src = m.source.as_ref().unwrap();
    assert_eq!(src.commit, fx.commits[0]);
    assert_eq!(m.mtime, 1_600_000_000, "mtime is the commit's time");
    assert_eq!(m.data[0].sha256, sha256(&csv));
    assert_eq!(m.spec.commit_hash.as_deref(), Some(fx.commits[0].as_str()));
    for f in &m.files {
        let p = x.join(&f.path);
        match f.kind {
            jobpack_core::EntryKind::File => {
                assert_eq!(
                    f.sha256.as_deref(),
                    Some(sha256(&std::fs::read(&p).unwrap()).as_str())
                );
                assert_eq!(f.mode, format!("{:04o}", mode(&f.path)));
            }
            jobpack_core::EntryKind::Symlink => assert!(p.is_symlink()),
            jobpack_core::EntryKind::Dir => assert!(p.is_dir()),
        }
    }

    // The artifact runs: run.sh from another directory finds its code and data.
    let out = std::process::Command::new(x.join("run.sh"))
        .current_dir("/")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "hello from commit 0\na,b\n1,2\nran\n"
    );
    assert_no_leftovers(&e);
}

#[tokio::test(flavor = "multi_thread")]
async fn falls_back_to_a_full_fetch_and_resolves_abbreviations() {
    let e = env();
    let repos = e.root.join("repos");
    let fx = fixture_repo(&repos, "strict", false);
    let daemon = GitDaemon::start(&repos);
    let packager = Packager::new(config(&e)).unwrap();

    let art = packager
        .pack(&spec(serde_json::json!({
            "git_url": daemon.url("strict.git"),
            "commit_hash": fx.commits[1],
            "command": ["cat", "hello.txt"],
        })))
        .await
        .unwrap();
    assert!(
        !art.shallow_fetch,
        "the daemon refuses SHA wants: expected the full-fetch fallback"
    );
    let x = e.root.join("x");
    extract(&art.path, &x);
    assert_eq!(
        std::fs::read_to_string(x.join("code/hello.txt")).unwrap(),
        "hello from commit 1\n"
    );
    assert!(x.join("code/added-in-1.txt").exists());

    // An abbreviation resolves to the full id, which the manifest records.
    let abbrev = &fx.commits[2][..10];
    let art = packager
        .pack(&spec(serde_json::json!({
            "git_url": daemon.url("strict.git"),
            "commit_hash": abbrev.to_uppercase(),
            "command": "true",
        })))
        .await
        .unwrap();
    assert_eq!(art.commit.as_deref(), Some(fx.commits[2].as_str()));
    assert_eq!(
        art.manifest.spec.commit_hash.as_deref(),
        Some(fx.commits[2].as_str())
    );
    assert!(
        !art.manifest
            .files
            .iter()
            .any(|f| f.path == "code/src/nested/deep.txt")
    );
    assert_no_leftovers(&e);
}

#[tokio::test(flavor = "multi_thread")]
async fn git_errors_are_clear_and_leave_nothing() {
    let e = env();
    let repos = e.root.join("repos");
    fixture_repo(&repos, "app", true);
    let daemon = GitDaemon::start(&repos);
    let packager = Packager::new(config(&e)).unwrap();
    let pack = |url: String, commit: &str| {
        let s = spec(serde_json::json!({"git_url": url, "commit_hash": commit, "command": "x"}));
        let p = packager.clone();
        async move { p.pack(&s).await }
    };

    let missing = "0123456789abcdef0123456789abcdef01234567";
    let err = pack(daemon.url("app.git"), missing).await.unwrap_err();
    assert!(
        matches!(err, Error::Git(GitError::UnknownCommit { .. })),
        "{err}"
    );
    assert!(err.to_string().contains(missing), "{err}");

    let err = pack(daemon.url("app.git"), "deadbeef").await.unwrap_err();
    assert!(
        matches!(err, Error::Git(GitError::UnknownCommit { .. })),
        "{err}"
    );

    let err = pack(daemon.url("nope.git"), missing).await.unwrap_err();
    assert!(
        matches!(err, Error::Git(GitError::Unreachable { .. })),
        "{err}"
    );

    let closed = free_port();
    let err = pack(format!("git://127.0.0.1:{closed}/app.git"), missing)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Git(GitError::Unreachable { .. })),
        "{err}"
    );

    let err = pack(daemon.url("app.git"), &"a".repeat(64))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Git(GitError::Sha256Unsupported { .. })),
        "{err}"
    );
    assert_no_leftovers(&e);
}

#[tokio::test(flavor = "multi_thread")]
async fn file_urls_work_unless_forbidden() {
    let e = env();
    let repos = e.root.join("repos");
    let fx = fixture_repo(&repos, "app", false);
    let url = format!("file://{}", repos.join("app.git").display());
    let s = spec(serde_json::json!({"git_url": url, "commit_hash": fx.commits[0], "command": "x"}));

    let art = Packager::new(config(&e)).unwrap().pack(&s).await.unwrap();
    assert_eq!(art.commit.as_deref(), Some(fx.commits[0].as_str()));

    let mut c = config(&e);
    c.allow_file_urls = false;
    let err = Packager::new(c).unwrap().pack(&s).await.unwrap_err();
    assert!(
        matches!(err, Error::Git(GitError::LocalUrlForbidden { .. })),
        "{err}"
    );
    assert_no_leftovers(&e);
}

#[tokio::test(flavor = "multi_thread")]
async fn submodules_are_materialised_at_their_pinned_commit() {
    let e = env();
    let repos = e.root.join("repos");
    let lib = fixture_repo(&repos, "lib", true);
    let daemon = GitDaemon::start(&repos);
    let app = repos.join("app");
    std::fs::create_dir_all(&app).unwrap();
    git(&app, &["init", "-q", "-b", "main"]);
    std::fs::write(app.join("main.txt"), "app\n").unwrap();
    git(
        &app,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            repos.join("lib.git").to_str().unwrap(),
            "vendor/lib",
        ],
    );
    git(
        &app.join("vendor/lib"),
        &["checkout", "-q", &lib.commits[0]],
    );
    // Point .gitmodules at the sibling repository on the daemon, relative to the superproject.
    std::fs::write(
        app.join(".gitmodules"),
        "[submodule \"vendor/lib\"]\n\tpath = vendor/lib\n\turl = ../lib.git\n",
    )
    .unwrap();
    let c = commit(&app, "with submodule", 1_600_001_000);
    git(
        &repos,
        &["clone", "-q", "--bare", app.to_str().unwrap(), "app.git"],
    );

    let art = Packager::new(config(&e))
        .unwrap()
        .pack(&spec(serde_json::json!({
            "git_url": daemon.url("app.git"), "commit_hash": c, "command": "x"})))
        .await
        .unwrap();
    let x = e.root.join("x");
    extract(&art.path, &x);
    assert_eq!(
        std::fs::read_to_string(x.join("code/vendor/lib/hello.txt")).unwrap(),
        "hello from commit 0\n"
    );
    assert!(
        !list_tree(&x)
            .iter()
            .any(|p| p.ends_with(".git") || p.contains(".git/"))
    );
    let subs = &art.manifest.source.as_ref().unwrap().submodules;
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].path, "vendor/lib");
    assert_eq!(subs[0].commit, lib.commits[0]);
    assert_eq!(subs[0].url, daemon.url("lib.git"));
}

#[tokio::test(flavor = "multi_thread")]
async fn pinned_data_is_checked_and_a_mismatch_keeps_nothing() {
    let e = env();
    let data = DataServer::start().await;
    let body = Arc::new(b"0123456789".repeat(1000));
    let url = data.route("/d.bin", Route::Bytes(body.clone()));
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = events.clone();
    let packager = Packager::new(config(&e))
        .unwrap()
        .with_progress(Arc::new(move |p| sink.lock().unwrap().push(p)));

    let ok = spec(serde_json::json!({
        "command": "x", "data": [{"url": url, "sha256": sha256(&body), "path": "in/d.bin"}]}));
    let art = packager.pack(&ok).await.unwrap();
    {
        use jobpack_core::{Progress, Stage};
        let ev = events.lock().unwrap();
        let stages: Vec<Stage> = ev
            .iter()
            .filter_map(|p| match p {
                Progress::Stage { stage } => Some(*stage),
                _ => None,
            })
            .collect();
        assert_eq!(
            stages,
            [
                Stage::Fetching,
                Stage::Rendering,
                Stage::Archiving,
                Stage::Done
            ]
        );
        assert!(ev.iter().any(|p| matches!(
            p,
            Progress::Download {
                downloaded: 10_000,
                total: Some(10_000),
                ..
            }
        )));
    }
    assert_eq!(art.manifest.data[0].path, "in/d.bin");
    assert_eq!(art.manifest.data[0].size, 10_000);
    assert!(art.commit.is_none());

    let wrong = "f".repeat(64);
    let bad = spec(serde_json::json!({
        "command": "x", "data": [{"url": url, "sha256": wrong}]}));
    let out = e.out.join("bad.tar.gz");
    let err = packager.pack_to(&bad, &out).await.unwrap_err();
    assert!(
        matches!(err, Error::Fetch(FetchError::HashMismatch { .. })),
        "{err}"
    );
    assert!(err.to_string().contains(&sha256(&body)), "{err}");
    assert!(!out.exists(), "no artifact after a mismatch");
    assert_no_leftovers(&e);
}

#[tokio::test(flavor = "multi_thread")]
async fn http_errors_timeouts_and_retries() {
    let e = env();
    let data = DataServer::start().await;
    let mut c = config(&e);
    c.download.idle_timeout = Duration::from_millis(500);
    c.download.retries = 2;
    let packager = Packager::new(c).unwrap();
    let pack_url = |url: String| {
        let s = spec(serde_json::json!({"command": "x", "data_url": url}));
        let p = packager.clone();
        async move { p.pack(&s).await }
    };

    let err = pack_url(data.route("/missing", Route::Status(404)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Fetch(FetchError::Status { status: 404, .. })),
        "{err}"
    );
    assert_eq!(data.hits("/missing"), 1, "a 404 is not retried");

    let err = pack_url(data.route("/slow", Route::Stall { len: 1 << 20 }))
        .await
        .unwrap_err();
    let Error::Fetch(FetchError::GaveUp { attempts, last, .. }) = &err else {
        panic!("expected a time-out after retries, got {err}");
    };
    assert_eq!(*attempts, 3);
    assert!(matches!(**last, FetchError::Timeout { .. }), "{last}");
    assert!(last.to_string().contains("timed out"), "{last}");

    let body = Arc::new(b"eventually".to_vec());
    let art = pack_url(data.route("/flaky", Route::Flaky { fails: 2, body }))
        .await
        .unwrap();
    assert_eq!(art.manifest.data[0].size, 10);
    assert_eq!(data.hits("/flaky"), 3);

    let mut c = config(&e);
    c.download.max_bytes = 100;
    let err = Packager::new(c)
        .unwrap()
        .pack(&spec(serde_json::json!({"command": "x",
            "data_url": data.route("/big", Route::Bytes(Arc::new(vec![0; 1000])))})))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Fetch(FetchError::TooLarge { .. })),
        "{err}"
    );
    assert_no_leftovers(&e);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_failure_stops_the_git_fetch_and_cleans_up() {
    let e = env();
    let repos = e.root.join("repos");
    let fx = fixture_repo(&repos, "app", true);
    let daemon = GitDaemon::start(&repos);
    let data = DataServer::start().await;
    let err = Packager::new(config(&e))
        .unwrap()
        .pack(&spec(serde_json::json!({
            "git_url": daemon.url("app.git"), "commit_hash": fx.commits[0], "command": "x",
            "data_url": data.route("/gone", Route::Status(410))})))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Fetch(FetchError::Status { status: 410, .. })),
        "{err}"
    );
    assert_no_leftovers(&e);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_makes_a_second_pack_work_offline_with_the_same_bytes() {
    let e = env();
    let repos = e.root.join("repos");
    let fx = fixture_repo(&repos, "app", true);
    let daemon = GitDaemon::start(&repos);
    let data = DataServer::start().await;
    let body = Arc::new(b"cached data".to_vec());
    let url = data.route("/c.txt", Route::Bytes(body.clone()));
    let mut c = config(&e);
    c.cache_dir = Some(e.root.join("cache"));
    let packager = Packager::new(c).unwrap();
    let s = spec(serde_json::json!({
        "git_url": daemon.url("app.git"), "commit_hash": fx.commits[1], "command": "x",
        "data": [{"url": url, "sha256": sha256(&body)}]}));
    let first = packager.pack_to(&s, &e.out.join("1.tar.gz")).await.unwrap();
    drop(daemon);
    drop(data);
    let second = packager.pack_to(&s, &e.out.join("2.tar.gz")).await.unwrap();
    assert_eq!(first.sha256, second.sha256);
    assert_no_leftovers(&e);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_values_run_literally() {
    let e = env();
    let marker = e.root.join("pwned");
    let hostile = format!(
        "a'b\"c $(touch {m}) `touch {m}` ${{HOME}} \\ \n; touch {m} #",
        m = marker.display()
    );
    let s = spec(serde_json::json!({
        "command": ["printf", "%s|%s", hostile, "-n"],
        "env": {"EVIL": hostile},
    }));
    let art = Packager::new(config(&e)).unwrap().pack(&s).await.unwrap();
    let x = e.root.join("x");
    extract(&art.path, &x);
    let out = std::process::Command::new(x.join("run.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{hostile}|-n")
    );
    assert!(!marker.exists(), "a value was executed");

    // The same through `sh -c` with the value in the environment.
    let s = spec(serde_json::json!({"command": "printf %s \"$EVIL\"", "env": {"EVIL": hostile}}));
    let art = Packager::new(config(&e)).unwrap().pack(&s).await.unwrap();
    let y = e.root.join("y");
    extract(&art.path, &y);
    let out = std::process::Command::new(y.join("run.sh"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), hostile);
    assert!(!marker.exists(), "a value was executed");
}

#[tokio::test(flavor = "multi_thread")]
async fn smart_http_depth_one_and_auth_required() {
    let e = env();
    let repos = e.root.join("repos");
    let fx = fixture_repo(&repos, "app", true);
    let http = DataServer::start().await;
    http.serve_git(&repos);
    let packager = Packager::new(config(&e)).unwrap();

    let art = packager
        .pack(&spec(serde_json::json!({
            "git_url": http.git_url("app.git"), "commit_hash": fx.commits[1], "command": "x"})))
        .await
        .unwrap();
    assert!(
        art.shallow_fetch,
        "smart HTTP with SHA wants allowed: expected a depth-1 fetch"
    );
    let x = e.root.join("x");
    extract(&art.path, &x);
    assert_eq!(
        std::fs::read_to_string(x.join("code/hello.txt")).unwrap(),
        "hello from commit 1\n"
    );

    // A server that wants credentials: a clear error, not a hang or a prompt.
    http.route(
        "/private.git/info/refs?service=git-upload-pack",
        Route::Status(401),
    );
    let err = packager
        .pack(&spec(serde_json::json!({
            "git_url": format!("http://{}/private.git", http.addr),
            "commit_hash": fx.commits[1], "command": "x"})))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Git(GitError::AuthRequired { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("requires authentication"), "{err}");
    assert_no_leftovers(&e);
}

/// The install step is detected from the packed code, recorded in the manifest with the base
/// image's pinning, and rendered into the Dockerfile before the code is copied; a bad apt.txt
/// fails the pack and leaves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn the_runtime_and_a_pinned_base_are_recorded() {
    let e = env();
    let code = e.root.join("code");
    std::fs::create_dir_all(&code).unwrap();
    std::fs::write(code.join("requirements.txt"), "numpy==2.0\n").unwrap();
    std::fs::write(code.join("package.json"), "{}").unwrap();
    std::fs::write(code.join("apt.txt"), "libgomp1\n").unwrap();
    let pinned = format!("debian:bookworm@sha256:{}", "0".repeat(64));
    let s = spec(serde_json::json!({"command": "python3 x.py", "base_image": pinned}));
    let inputs = jobpack_core::PackInputs {
        code_dir: Some(code.clone()),
        data_dir: None,
        stdin: None,
    };
    let job = s.validate().unwrap();
    let p = Packager::new(config(&e)).unwrap();
    let art = p.pack_job_with(&job, &inputs, None).await.unwrap();
    let m = &art.manifest;
    let base = m.base_image.as_ref().unwrap();
    assert!(base.pinned && base.reference == pinned, "{base:?}");
    let rt = m.runtime.as_ref().unwrap();
    assert_eq!(rt.kind, jobpack_core::RuntimeKind::Python);
    assert_eq!(rt.markers, ["apt.txt", "requirements.txt"]);
    assert_eq!(rt.ignored, ["package.json"]);
    assert_eq!(rt.apt_packages, ["libgomp1"]);
    let dir = tempfile::tempdir().unwrap();
    jobpack_core::archive::unpack(&art.path, dir.path(), Default::default()).unwrap();
    let df = std::fs::read_to_string(dir.path().join("Dockerfile")).unwrap();
    let pos = |s: &str| df.find(s).unwrap_or_else(|| panic!("{s} not in {df}"));
    assert!(pos("apt-get install") < pos("COPY [\"code/requirements.txt\""));
    assert!(pos("pip install") < pos("COPY code/ /job/code/"));
    assert!(df.contains(&format!("ARG BASE_IMAGE=\"{pinned}\"")), "{df}");

    // The spec overrides detection; an unusable apt.txt fails the pack cleanly.
    let job = spec(serde_json::json!({"command": "x", "runtime": "node"}))
        .validate()
        .unwrap();
    let art = p.pack_job_with(&job, &inputs, None).await.unwrap();
    let rt = art.manifest.runtime.unwrap();
    assert_eq!(
        (rt.kind, rt.chosen_by.as_str()),
        (jobpack_core::RuntimeKind::Node, "spec")
    );
    std::fs::write(code.join("apt.txt"), "curl && rm -rf /\n").unwrap();
    let err = p.pack_job_with(&job, &inputs, None).await.unwrap_err();
    assert!(matches!(err, Error::Runtime(_)), "{err}");
    assert!(err.to_string().contains("apt.txt: line 1"), "{err}");
    assert_no_leftovers(&e);
}

/// `prepare` packs and unpacks in one call: the job directory holds `run.sh` and the code, the
/// artifact is where it was asked; a job directory that is not empty is refused untouched.
#[tokio::test(flavor = "multi_thread")]
async fn prepare_packs_and_unpacks_into_an_empty_job_directory() {
    let e = env();
    let code = e.root.join("code");
    std::fs::create_dir_all(&code).unwrap();
    std::fs::write(code.join("main.sh"), "echo hi\n").unwrap();
    let job = spec(serde_json::json!({"command": "sh code/main.sh"}))
        .validate()
        .unwrap();
    let inputs = jobpack_core::PackInputs {
        code_dir: Some(code),
        data_dir: None,
        stdin: None,
    };
    let p = Packager::new(config(&e)).unwrap();
    let (art, dir) = (e.root.join("a.tar.gz"), e.root.join("job"));
    let prepared = p.prepare(&job, &inputs, &art, &dir).await.unwrap();
    assert_eq!(prepared.artifact.path, art);
    assert_eq!(prepared.job_dir, dir);
    assert!(dir.join("run.sh").is_file());
    assert_eq!(
        std::fs::read_to_string(dir.join("code/main.sh")).unwrap(),
        "echo hi\n"
    );

    let full = e.root.join("full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("mine"), "keep").unwrap();
    let err = jobpack_core::unpack_job(&art, &full).await.unwrap_err();
    assert!(err.to_string().contains("non-empty directory"), "{err}");
    let names: Vec<_> = std::fs::read_dir(&full).unwrap().collect();
    assert_eq!(names.len(), 1);
    assert_eq!(std::fs::read_to_string(full.join("mine")).unwrap(), "keep");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pinned_spec_packs_again_from_the_artifact_cache_and_nothing_else_does() {
    use jobpack_core::Progress;
    let e = env();
    let repos = e.root.join("repos");
    let fx = fixture_repo(&repos, "app", true);
    let daemon = GitDaemon::start(&repos);
    let data = DataServer::start().await;
    let body = Arc::new(b"pinned data\n".repeat(1000));
    let url = data.route("/d.bin", Route::Bytes(body.clone()));
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = events.clone();
    let cache = e.root.join("cache");
    let packager = Packager::new(PackagerConfig {
        cache_dir: Some(cache.clone()),
        artifact_cache: true,
        ..config(&e)
    })
    .unwrap()
    .with_progress(Arc::new(move |p| sink.lock().unwrap().push(p)));
    let hits = |events: &std::sync::Mutex<Vec<Progress>>| -> Vec<bool> {
        let mut ev = events.lock().unwrap();
        let out = ev
            .iter()
            .filter_map(|p| match p {
                Progress::ArtifactCache { hit, note } => {
                    assert!(note.is_none(), "{note:?}");
                    Some(*hit)
                }
                _ => None,
            })
            .collect();
        ev.clear();
        out
    };
    let pinned = spec(serde_json::json!({
        "git_url": daemon.url("app.git"),
        "commit_hash": fx.commits[1],
        "data": [{"url": url, "sha256": sha256(&body)}],
        "command": "true",
    }));
    let first = packager
        .pack_to(&pinned, &e.out.join("1.tar.gz"))
        .await
        .unwrap();
    assert_eq!(hits(&events), [false], "packed, and kept");
    let second = packager
        .pack_to(&pinned, &e.out.join("2.tar.gz"))
        .await
        .unwrap();
    assert_eq!(hits(&events), [true], "the second comes from the cache");
    assert_eq!(second.sha256, first.sha256);
    assert_eq!(second.manifest, first.manifest);
    assert_eq!(
        std::fs::read(&second.path).unwrap(),
        std::fs::read(&first.path).unwrap(),
        "the same bytes"
    );
    // Without an output path it goes where a fresh pack would put it.
    let third = packager.pack(&pinned).await.unwrap();
    assert_eq!(hits(&events), [true]);
    assert_eq!(third.sha256, first.sha256);
    assert!(third.path.starts_with(&e.out), "{}", third.path.display());

    // A damaged entry is never served: the spec is packed again (and kept again).
    for f in std::fs::read_dir(cache.join("artifacts")).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|x| x == "gz") {
            let mut b = std::fs::read(&p).unwrap();
            let n = b.len();
            b[n / 2] ^= 1;
            std::fs::write(&p, b).unwrap();
        }
    }
    let again = packager
        .pack_to(&pinned, &e.out.join("4.tar.gz"))
        .await
        .unwrap();
    assert_eq!(hits(&events), [false]);
    assert_eq!(again.sha256, first.sha256);

    // Not pinned: an abbreviated commit, data without sha256. Never from the cache.
    for unpinned in [
        serde_json::json!({"git_url": daemon.url("app.git"), "commit_hash": &fx.commits[1][..10],
                           "command": "true"}),
        serde_json::json!({"git_url": daemon.url("app.git"), "commit_hash": fx.commits[1],
                           "data": [{"url": url}], "command": "true"}),
    ] {
        let s = spec(unpinned);
        packager.pack_to(&s, &e.out.join("u.tar.gz")).await.unwrap();
        packager.pack_to(&s, &e.out.join("u.tar.gz")).await.unwrap();
        assert_eq!(hits(&events), Vec::<bool>::new(), "no cache for {s:?}");
    }
    // Another command: another key.
    let other = spec(serde_json::json!({
        "git_url": daemon.url("app.git"),
        "commit_hash": fx.commits[1],
        "data": [{"url": url, "sha256": sha256(&body)}],
        "command": "false",
    }));
    let o = packager
        .pack_to(&other, &e.out.join("o.tar.gz"))
        .await
        .unwrap();
    assert_eq!(hits(&events), [false]);
    assert_ne!(o.sha256, first.sha256);
    assert_no_leftovers(&e);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_with_nothing_to_fetch_packs_from_memory_to_the_same_bytes() {
    // Nothing fetched or copied: no staging tree is written, and the artifact is byte for byte
    // the one the staged way makes (here: the same job with an empty upload, which stages).
    let e = env();
    let p = Packager::new(config(&e)).unwrap();
    let job = spec(serde_json::json!({"command": "echo hi", "env": {"A": "b c"}}))
        .validate()
        .unwrap();
    let memory = p
        .pack_job(&job, Some(&e.out.join("memory.tar.gz")))
        .await
        .unwrap();
    assert_eq!(
        list_tree(&e.work),
        Vec::<String>::new(),
        "a staging tree was made"
    );
    let empty = e.root.join("empty-upload");
    std::fs::create_dir(&empty).unwrap();
    let inputs = jobpack_core::PackInputs {
        code_dir: Some(empty),
        ..Default::default()
    };
    let staged = p
        .pack_job_with(&job, &inputs, Some(&e.out.join("staged.tar.gz")))
        .await
        .unwrap();
    assert_eq!(memory.sha256, staged.sha256);
    assert_eq!(
        std::fs::read(&memory.path).unwrap(),
        std::fs::read(&staged.path).unwrap()
    );
    let paths: Vec<_> = memory
        .manifest
        .files
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(paths, ["Dockerfile", "code", "data", "run.sh"]);
    let run_sh = memory
        .manifest
        .files
        .iter()
        .find(|f| f.path == "run.sh")
        .unwrap();
    assert_eq!(run_sh.mode, "0755");
    // The files unpack as recorded, run.sh executable.
    let dir = e.root.join("unpacked");
    jobpack_core::unpack_job(&memory.path, &dir).await.unwrap();
    let mode = std::fs::metadata(dir.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert!(
        std::fs::read_to_string(dir.join("run.sh"))
            .unwrap()
            .contains("echo hi")
    );
    assert!(dir.join("code").is_dir() && dir.join("data").is_dir());
    assert_no_leftovers(&e);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_artifact_of_many_compression_blocks_has_the_same_bytes_every_time() {
    // Uploaded code of ~12 MB of text: a dozen 1 MiB blocks compressed on every core, in whatever
    // order the threads take them. Each pack must write the same bytes (it did not when a
    // thread's compressor carried state from block to block).
    let e = env();
    let p = Packager::new(config(&e)).unwrap();
    let code = e.root.join("code");
    std::fs::create_dir(&code).unwrap();
    let mut rows = String::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..450_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        rows.push_str(&format!(
            "{i},{},{},row{}\n",
            x % 1_000_003,
            x >> 40,
            i % 613
        ));
    }
    std::fs::write(code.join("rows.csv"), &rows).unwrap();
    assert!(rows.len() > 12 << 20, "{} bytes", rows.len());
    let job = spec(serde_json::json!({"command": "wc -l code/rows.csv"}))
        .validate()
        .unwrap();
    let inputs = jobpack_core::PackInputs {
        code_dir: Some(code),
        ..Default::default()
    };
    let mut digests = Vec::new();
    for i in 0..4 {
        let out = e.out.join(format!("a{i}.tar.gz"));
        let a = p.pack_job_with(&job, &inputs, Some(&out)).await.unwrap();
        assert!(a.size > 2 << 20, "{} bytes: a few blocks at least", a.size);
        digests.push(a.sha256);
    }
    assert!(digests.iter().all(|d| *d == digests[0]), "{digests:?}");
}
