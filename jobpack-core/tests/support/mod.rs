//! Test fixtures that are real: git repositories made with the git CLI, served by `git daemon` on
//! 127.0.0.1, and an HTTP server on 127.0.0.1 for data files (with 404s, stalls and flaky answers).
//! Nothing here reaches beyond loopback.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs git with a clean, fixed identity and dates, in `dir`.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Fixture")
        .env("GIT_AUTHOR_EMAIL", "fixture@example.org")
        .env("GIT_COMMITTER_NAME", "Fixture")
        .env("GIT_COMMITTER_EMAIL", "fixture@example.org")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_ALLOW_PROTOCOL", "file:git:http:https")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Commits everything in `dir` at a fixed date; returns the commit id.
pub fn commit(dir: &Path, msg: &str, epoch: i64) -> String {
    git(dir, &["add", "-A"]);
    let date = format!("@{epoch} +0000");
    let out = Command::new("git")
        .args(["-c", "commit.gpgsign=false", "commit", "-q", "-m", msg])
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Fixture")
        .env("GIT_AUTHOR_EMAIL", "fixture@example.org")
        .env("GIT_COMMITTER_NAME", "Fixture")
        .env("GIT_COMMITTER_EMAIL", "fixture@example.org")
        .env("GIT_AUTHOR_DATE", &date)
        .env("GIT_COMMITTER_DATE", &date)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    git(dir, &["rev-parse", "HEAD"])
}

/// A fixture repository of three commits.
pub struct FixtureRepo {
    /// The work tree (a non-bare repo); serve `bare` instead.
    pub work: PathBuf,
    /// Commit ids, oldest first.
    pub commits: Vec<String>,
}

/// Builds the standard fixture under `root/<name>` (work tree) and `root/<name>.git` (bare, what
/// the daemon serves). Commit 0 has an executable script, a symlink and a subdirectory; later
/// commits change files, so packing an older commit is distinguishable.
pub fn fixture_repo(root: &Path, name: &str, allow_sha_wants: bool) -> FixtureRepo {
    use std::os::unix::fs::PermissionsExt;
    let work = root.join(name);
    std::fs::create_dir_all(work.join("src/nested")).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("hello.txt"), "hello from commit 0\n").unwrap();
    std::fs::write(work.join("run.py"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(work.join("run.py"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(work.join("src/nested/deep.txt"), "deep\n").unwrap();
    std::os::unix::fs::symlink("src/nested/deep.txt", work.join("link-to-deep")).unwrap();
    let c0 = commit(&work, "commit 0", 1_600_000_000);
    std::fs::write(work.join("hello.txt"), "hello from commit 1\n").unwrap();
    std::fs::write(work.join("added-in-1.txt"), "new\n").unwrap();
    let c1 = commit(&work, "commit 1", 1_600_000_100);
    std::fs::remove_file(work.join("src/nested/deep.txt")).unwrap();
    std::fs::write(work.join("hello.txt"), "hello from commit 2\n").unwrap();
    let c2 = commit(&work, "commit 2", 1_600_000_200);
    let bare = root.join(format!("{name}.git"));
    git(
        root,
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    if allow_sha_wants {
        git(
            &bare,
            &["config", "uploadpack.allowReachableSHA1InWant", "true"],
        );
    }
    FixtureRepo {
        work,
        commits: vec![c0, c1, c2],
    }
}

/// A free port on 127.0.0.1 (bound then released; the daemon takes it right after).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `git daemon` serving every repository under a directory on 127.0.0.1.
pub struct GitDaemon {
    child: Child,
    pub port: u16,
}

impl GitDaemon {
    pub fn start(base: &Path) -> GitDaemon {
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new("git")
                .args([
                    "daemon",
                    "--reuseaddr",
                    "--listen=127.0.0.1",
                    &format!("--port={port}"),
                    &format!("--base-path={}", base.display()),
                    "--export-all",
                    "--informative-errors",
                    base.to_str().unwrap(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("git daemon starts");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return GitDaemon { child, port };
                }
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("git daemon did not start");
    }

    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the data server answers for a path.
#[derive(Clone)]
pub enum Route {
    /// 200 with these bytes.
    Bytes(Arc<Vec<u8>>),
    /// 200 with this file streamed from disk.
    File(PathBuf),
    /// This status, empty body.
    Status(u16),
    /// Headers promising `len` bytes, a few bytes, then silence.
    Stall { len: u64 },
    /// `fails` answers of 503, then 200 with these bytes.
    Flaky { fails: usize, body: Arc<Vec<u8>> },
}

/// A small HTTP/1.1 server on 127.0.0.1 (one request per connection).
pub struct DataServer {
    pub addr: SocketAddr,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl DataServer {
    pub async fn start() -> DataServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (r, h) = (routes.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    break;
                };
                let (r, h) = (r.clone(), h.clone());
                tokio::spawn(async move {
                    let _ = serve(sock, r, h).await;
                });
            }
        });
        DataServer {
            addr,
            routes,
            hits,
            task,
        }
    }

    pub fn route(&self, path: &str, route: Route) -> String {
        self.routes.lock().unwrap().insert(path.to_owned(), route);
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

impl Drop for DataServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

static FLAKY: AtomicUsize = AtomicUsize::new(0);

async fn serve(
    mut sock: tokio::net::TcpStream,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut buf).await?;
        if n == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let hit = {
        let mut h = hits.lock().unwrap();
        let c = h.entry(path.clone()).or_insert(0);
        *c += 1;
        *c
    };
    let route = routes.lock().unwrap().get(&path).cloned();
    let header = |status: u16, len: u64| {
        format!("HTTP/1.1 {status} X\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    match route {
        None => sock.write_all(header(404, 0).as_bytes()).await?,
        Some(Route::Status(s)) => sock.write_all(header(s, 0).as_bytes()).await?,
        Some(Route::Bytes(b)) => {
            sock.write_all(header(200, b.len() as u64).as_bytes())
                .await?;
            sock.write_all(&b).await?;
        }
        Some(Route::File(p)) => {
            let mut f = tokio::fs::File::open(&p).await?;
            let len = f.metadata().await?.len();
            sock.write_all(header(200, len).as_bytes()).await?;
            tokio::io::copy(&mut f, &mut sock).await?;
        }
        Some(Route::Stall { len }) => {
            sock.write_all(header(200, len).as_bytes()).await?;
            sock.write_all(b"partial").await?;
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
        Some(Route::Flaky { fails, body }) => {
            FLAKY.fetch_add(1, Ordering::Relaxed);
            if hit <= fails {
                sock.write_all(header(503, 0).as_bytes()).await?;
            } else {
                sock.write_all(header(200, body.len() as u64).as_bytes())
                    .await?;
                sock.write_all(&body).await?;
            }
        }
    }
    sock.shutdown().await
}

/// Extracts a `.tar.gz` into `dest` with the tar crate (preserving modes and symlinks).
pub fn extract(artifact: &Path, dest: &Path) {
    let f = std::fs::File::open(artifact).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    ar.set_preserve_permissions(true);
    ar.unpack(dest).unwrap();
}

/// Every path under `dir`, relative, sorted (directories with a trailing `/`).
pub fn list_tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let ft = std::fs::symlink_metadata(&p).unwrap().file_type();
            if ft.is_dir() {
                out.push(format!("{rel}/"));
                walk(base, &p, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
