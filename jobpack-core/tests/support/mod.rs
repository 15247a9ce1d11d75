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

/// A child process in a process group of its own, ended with the whole group (SIGKILL) when
/// dropped, also on a panic: `git daemon`, for one, forks `git-daemon`, which killing only the
/// `git` process would leave behind.
pub struct GroupChild(pub Child);

impl GroupChild {
    /// Spawns `cmd` as the leader of a new process group.
    pub fn spawn(cmd: &mut Command) -> std::io::Result<GroupChild> {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0).spawn().map(GroupChild)
    }

    /// Ends the group and reaps the leader.
    pub fn stop(&mut self) {
        // SAFETY: a signal to the process group this child leads (its pid is the group id).
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `git daemon` serving every repository under a directory on 127.0.0.1.
pub struct GitDaemon {
    child: GroupChild,
    pub port: u16,
}

impl GitDaemon {
    pub fn start(base: &Path) -> GitDaemon {
        for _ in 0..5 {
            let port = free_port();
            let mut child = GroupChild::spawn(
                Command::new("git")
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
                    .stderr(Stdio::null()),
            )
            .expect("git daemon starts");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return GitDaemon { child, port };
                }
                if child.0.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            child.stop();
        }
        panic!("git daemon did not start");
    }

    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
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
    /// 302 to this URL.
    Redirect(String),
}

/// A small HTTP/1.1 server on 127.0.0.1 (one request per connection). Paths under `/git/` are
/// answered by `git http-backend` (smart HTTP) for the repositories in the directory given to
/// [`DataServer::serve_git`].
pub struct DataServer {
    pub addr: SocketAddr,
    git_root: Arc<Mutex<Option<PathBuf>>>,
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
        let git_root: Arc<Mutex<Option<PathBuf>>> = Arc::default();
        let (r, h, g) = (routes.clone(), hits.clone(), git_root.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    break;
                };
                let (r, h, g) = (r.clone(), h.clone(), g.clone());
                tokio::spawn(async move {
                    let _ = serve(sock, r, h, g).await;
                });
            }
        });
        DataServer {
            addr,
            git_root,
            routes,
            hits,
            task,
        }
    }

    pub fn route(&self, path: &str, route: Route) -> String {
        self.routes.lock().unwrap().insert(path.to_owned(), route);
        format!("http://{}{path}", self.addr)
    }

    /// Serves the bare repositories under `root` at `http://ADDR/git/<name>`.
    pub fn serve_git(&self, root: &Path) {
        *self.git_root.lock().unwrap() = Some(root.to_path_buf());
    }

    pub fn git_url(&self, repo: &str) -> String {
        format!("http://{}/git/{repo}", self.addr)
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
    git_root: Arc<Mutex<Option<PathBuf>>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let end = loop {
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = sock.read(&mut buf).await?;
        if n == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    };
    let rest = head.split_off(end);
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut words = text.split_whitespace();
    let method = words.next().unwrap_or("GET").to_owned();
    let target = words.next().unwrap_or("/").to_owned();
    if let Some(git_path) = target.strip_prefix("/git") {
        let root = git_root.lock().unwrap().clone();
        if let Some(root) = root {
            return git_http(sock, &root, &method, git_path, &text, rest).await;
        }
    }
    let path = target;
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
        Some(Route::Redirect(to)) => {
            let h = format!(
                "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            sock.write_all(h.as_bytes()).await?;
        }
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

/// Runs `git http-backend` as a CGI for one request.
async fn git_http(
    mut sock: tokio::net::TcpStream,
    root: &Path,
    method: &str,
    target: &str,
    head: &str,
    mut body: Vec<u8>,
) -> std::io::Result<()> {
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    // The request body: Content-Length or chunked.
    if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while body.len() < len {
            let mut buf = vec![0u8; 64 * 1024];
            let n = sock.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&buf[..n]);
        }
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut raw = body;
        let mut decoded = Vec::new();
        loop {
            // Parse as many complete chunks as we have; read more when short.
            let mut pos = 0;
            let mut done = false;
            decoded.clear();
            while let Some(eol) = raw[pos..].windows(2).position(|w| w == b"\r\n") {
                let size_line = String::from_utf8_lossy(&raw[pos..pos + eol]).into_owned();
                let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
                    .unwrap_or(0);
                let start = pos + eol + 2;
                if size == 0 {
                    done = true;
                    break;
                }
                if raw.len() < start + size + 2 {
                    break;
                }
                decoded.extend_from_slice(&raw[start..start + size]);
                pos = start + size + 2;
            }
            if done {
                break;
            }
            let mut buf = vec![0u8; 64 * 1024];
            let n = sock.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
        body = decoded;
    }
    let (path_info, query) = target.split_once('?').unwrap_or((target, ""));
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("REQUEST_METHOD", method)
        .env("PATH_INFO", path_info)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("GIT_PROTOCOL", header("git-protocol").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let out = child.wait_with_output().await?;
    let _ = writer.await;
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| {
            out.stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, 2))
        });
    let Some((i, sep)) = split else {
        return sock
            .write_all(b"HTTP/1.1 500 X\r\nContent-Length: 0\r\n\r\n")
            .await;
    };
    let cgi_head = String::from_utf8_lossy(&out.stdout[..i]).into_owned();
    let cgi_body = &out.stdout[i + sep..];
    let mut status = "200 OK".to_owned();
    let mut resp = String::new();
    for l in cgi_head.lines() {
        if let Some(s) = l.strip_prefix("Status:") {
            status = s.trim().to_owned();
        } else if !l.trim().is_empty() {
            resp.push_str(l.trim_end());
            resp.push_str("\r\n");
        }
    }
    let head = format!(
        "HTTP/1.1 {status}\r\n{resp}Content-Length: {}\r\nConnection: close\r\n\r\n",
        cgi_body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(cgi_body).await?;
    sock.shutdown().await
}

/// Host processes whose command line contains `marker` (to prove a job left nothing running).
pub fn host_procs_with(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd)
            .replace('\0', " ")
            .contains(marker)
        {
            out.push(pid);
        }
    }
    out
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
